//! Topics (rooms): named sets of connections that a message can be published to.

use std::collections::HashMap;

use slab::Slab;

use crate::ConnId;

/// Every topic with at least one subscriber, by name, and the topics of every connection that
/// subscribed to any (kept here, not in the connection's slot: most connections of an echo or a
/// game never subscribe, and an idle connection's slot is most of its memory).
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Box<str>, usize>,
    topics: Slab<Topic>,
    /// The topic keys of each connection with at least one subscription.
    by_conn: HashMap<ConnId, Vec<u32>>,
}

#[derive(Debug)]
struct Topic {
    name: Box<str>,
    members: Vec<ConnId>,
}

impl Topics {
    /// Adds `id` to `name`; false if it was there.
    pub(crate) fn subscribe(&mut self, name: &str, id: ConnId) -> bool {
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
        let keys = self.by_conn.entry(id).or_default();
        if keys.contains(&(key as u32)) {
            return false;
        }
        keys.push(key as u32);
        self.topics[key].members.push(id);
        true
    }

    /// Removes `id` from `name`; false if it was not there.
    pub(crate) fn unsubscribe(&mut self, name: &str, id: ConnId) -> bool {
        let Some(&key) = self.by_name.get(name) else {
            return false;
        };
        let Some(keys) = self.by_conn.get_mut(&id) else {
            return false;
        };
        let Some(at) = keys.iter().position(|&k| k as usize == key) else {
            return false;
        };
        keys.swap_remove(at);
        if keys.is_empty() {
            self.by_conn.remove(&id);
        }
        self.leave(key, id);
        true
    }

    /// Removes `id` from every topic it is subscribed to.
    pub(crate) fn unsubscribe_all(&mut self, id: ConnId) {
        for key in self.by_conn.remove(&id).unwrap_or_default() {
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

    /// The names of the topics `id` is subscribed to.
    pub(crate) fn names_of(&self, id: ConnId) -> impl Iterator<Item = &str> + '_ {
        (self.by_conn.get(&id).map_or(&[][..], Vec::as_slice).iter())
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
        assert!(topics.subscribe("room", id(1)));
        assert!(!topics.subscribe("room", id(1)));
        assert!(topics.subscribe("room", id(2)));
        assert!(topics.subscribe("other", id(2)));
        assert_eq!(topics.members("room"), [id(1), id(2)]);
        assert_eq!(
            topics.names_of(id(2)).collect::<Vec<_>>(),
            ["room", "other"]
        );
        assert!(topics.unsubscribe("room", id(1)));
        assert!(!topics.unsubscribe("room", id(1)));
        assert!(
            !topics.by_conn.contains_key(&id(1)),
            "no subscriptions, no list"
        );
        assert_eq!(topics.members("room"), [id(2)]);
        topics.unsubscribe_all(id(2));
        assert!(topics.members("room").is_empty());
        assert!(topics.by_name.is_empty() && topics.topics.is_empty() && topics.by_conn.is_empty());
    }
}
