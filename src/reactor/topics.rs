//! Topics (rooms): named sets of connections that a message can be published to.

use std::collections::HashMap;

use slab::Slab;

use crate::ConnId;

/// Every topic with at least one subscriber, by name. A connection keeps the ids of its
/// topics in its [`Subscriptions`], so that closing it leaves them all.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Box<str>, usize>,
    topics: Slab<Topic>,
}

/// The ids of the topics one connection is subscribed to: a pointer's size, and no
/// allocation, until it subscribes.
#[derive(Debug, Default)]
#[allow(clippy::box_collection)] // the box is the point: 8 bytes in every connection, not 24
pub(crate) struct Subscriptions(Option<Box<Vec<u32>>>);

impl Subscriptions {
    /// The topic ids.
    pub(crate) fn as_slice(&self) -> &[u32] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Adds `key`; false if it was there.
    fn insert(&mut self, key: u32) -> bool {
        let keys = self.0.get_or_insert_with(Box::default);
        if keys.contains(&key) {
            return false;
        }
        keys.push(key);
        true
    }

    /// Removes `key`; false if it was not there. The last one frees the list.
    fn remove(&mut self, key: u32) -> bool {
        let Some(keys) = &mut self.0 else {
            return false;
        };
        let Some(at) = keys.iter().position(|&k| k == key) else {
            return false;
        };
        keys.swap_remove(at);
        if keys.is_empty() {
            self.0 = None;
        }
        true
    }
}

#[derive(Debug)]
struct Topic {
    name: Box<str>,
    members: Vec<ConnId>,
}

impl Topics {
    /// Adds `id` to `name`, recording the topic in `subscriptions`; false if it was there.
    pub(crate) fn subscribe(
        &mut self,
        name: &str,
        id: ConnId,
        subscriptions: &mut Subscriptions,
    ) -> bool {
        let key = match self.by_name.get(name) {
            Some(&key) => key,
            None => {
                let key = self.topics.insert(Topic {
                    name: name.into(),
                    members: Vec::new(),
                });
                self.by_name.insert(name.into(), key);
                key
            }
        };
        if !subscriptions.insert(key as u32) {
            return false;
        }
        self.topics[key].members.push(id);
        true
    }

    /// Removes `id` from `name`; false if it was not there.
    pub(crate) fn unsubscribe(
        &mut self,
        name: &str,
        id: ConnId,
        subscriptions: &mut Subscriptions,
    ) -> bool {
        let Some(&key) = self.by_name.get(name) else {
            return false;
        };
        if !subscriptions.remove(key as u32) {
            return false;
        }
        self.leave(key, id);
        true
    }

    /// Removes `id` from every topic in `subscriptions`.
    pub(crate) fn unsubscribe_all(&mut self, id: ConnId, subscriptions: Subscriptions) {
        for &key in subscriptions.as_slice() {
            self.leave(key as usize, id);
        }
    }

    fn leave(&mut self, key: usize, id: ConnId) {
        let Some(topic) = self.topics.get_mut(key) else {
            return;
        };
        if let Some(at) = topic.members.iter().position(|&m| m == id) {
            topic.members.swap_remove(at);
        }
        if topic.members.is_empty() {
            let topic = self.topics.remove(key);
            self.by_name.remove(&topic.name);
        }
    }

    /// The subscribers of `name` (none if nobody subscribed).
    pub(crate) fn members(&self, name: &str) -> &[ConnId] {
        self.by_name
            .get(name)
            .map_or(&[], |&key| &self.topics[key].members)
    }

    /// The names of the topics in `subscriptions`.
    pub(crate) fn names<'a>(
        &'a self,
        subscriptions: &'a [u32],
    ) -> impl Iterator<Item = &'a str> + 'a {
        subscriptions
            .iter()
            .filter_map(|&key| self.topics.get(key as usize))
            .map(|topic| &*topic.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ConnId {
        ConnId {
            index,
            generation: 1,
        }
    }

    #[test]
    fn subscribe_publish_list_and_leave() {
        let mut topics = Topics::default();
        let (mut a, mut b) = (Subscriptions::default(), Subscriptions::default());
        assert!(topics.subscribe("room", id(1), &mut a));
        assert!(!topics.subscribe("room", id(1), &mut a));
        assert!(topics.subscribe("room", id(2), &mut b));
        assert!(topics.subscribe("other", id(2), &mut b));
        assert_eq!(topics.members("room"), [id(1), id(2)]);
        assert_eq!(
            topics.names(b.as_slice()).collect::<Vec<_>>(),
            ["room", "other"]
        );
        assert!(topics.unsubscribe("room", id(1), &mut a));
        assert!(!topics.unsubscribe("room", id(1), &mut a));
        assert!(a.0.is_none(), "no subscriptions, no list");
        assert_eq!(topics.members("room"), [id(2)]);
        topics.unsubscribe_all(id(2), std::mem::take(&mut b));
        assert!(topics.members("room").is_empty());
        assert!(topics.by_name.is_empty() && topics.topics.is_empty());
    }
}
