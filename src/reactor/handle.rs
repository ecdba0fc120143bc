//! A [`Handle`] lets other threads send, publish, close and shut down through the reactor.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use mio::Waker;

use crate::{CloseCode, ConnId, Message, Metrics};

/// What another thread asked the reactor to do.
#[derive(Debug)]
pub(crate) enum Command {
    Send(ConnId, OwnedMessage),
    Broadcast(OwnedMessage),
    Publish(String, OwnedMessage),
    PublishLocal(String, OwnedMessage),
    Close(ConnId, CloseCode, String),
    Metrics(SyncSender<Metrics>),
}

/// What a command counts against `Config::handle_queue` besides its bytes, so that empty
/// messages cannot queue without bound either.
const COMMAND_COST: usize = 64;

impl Command {
    /// Issue 14 (5): the bytes the command counts against `Config::handle_queue`.
    pub(crate) fn cost(&self) -> usize {
        COMMAND_COST
            + match self {
                Command::Send(_, msg) | Command::Broadcast(msg) => msg.bytes.len(),
                Command::Publish(topic, msg) | Command::PublishLocal(topic, msg) => {
                    topic.len() + msg.bytes.len()
                }
                Command::Close(_, _, reason) => reason.len(),
                Command::Metrics(_) => 0,
            }
    }
}

/// A message copied to cross threads.
#[derive(Debug)]
pub(crate) struct OwnedMessage {
    text: bool,
    bytes: Vec<u8>,
}

impl OwnedMessage {
    fn new(msg: Message<'_>) -> OwnedMessage {
        OwnedMessage {
            text: matches!(msg, Message::Text(_)),
            bytes: msg.as_bytes().to_vec(),
        }
    }

    /// The message, borrowed.
    pub(crate) fn as_message(&self) -> Message<'_> {
        match std::str::from_utf8(&self.bytes) {
            Ok(text) if self.text => Message::Text(text),
            _ => Message::Binary(&self.bytes),
        }
    }
}

/// Why a [`Handle`] call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleError {
    /// The reactor's command queue is full (`Config::handle_queue` bytes): it is not keeping
    /// up.
    Full,
    /// The server is gone.
    Stopped,
    /// The reactor did not answer in time (it is not turning, or far behind).
    TimedOut,
}

crate::error::error_messages!(HandleError {
    HandleError::Full => ("the server's command queue is full"),
    HandleError::Stopped => ("the server has stopped"),
    HandleError::TimedOut => ("the server did not answer in time"),
});

/// State shared by the reactor and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) waker: Waker,
    /// A wake-up is on its way: later commands need not wake the reactor again.
    pub(crate) woken: AtomicBool,
    pub(crate) shutdown: AtomicBool,
    /// The server is gone (dropped): it will neither deliver nor publish anything more.
    pub(crate) stopped: AtomicBool,
    /// Issue 14 (5): bytes of the commands queued ([`Command::cost`]), and their bound.
    pub(crate) queued: AtomicUsize,
    pub(crate) max_queued: usize,
}

/// A `Send + Clone` handle to a [`Server`](crate::Server), for other threads.
///
/// Each call copies the message into a queue bounded in bytes (`Config::handle_queue`) and
/// wakes the reactor, which carries it out on its next turn, in order. A full queue refuses the
/// call instead of growing.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) tx: Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    fn command(&self, command: Command) -> Result<(), HandleError> {
        let cost = command.cost();
        let queued = self.shared.queued.fetch_add(cost, Ordering::AcqRel);
        if queued + cost > self.shared.max_queued {
            self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
            return Err(HandleError::Full);
        }
        if self.tx.send(command).is_err() {
            self.shared.queued.fetch_sub(cost, Ordering::AcqRel);
            return Err(HandleError::Stopped);
        }
        self.wake()
    }

    fn wake(&self) -> Result<(), HandleError> {
        if !self.shared.woken.swap(true, Ordering::AcqRel) {
            self.shared.waker.wake().map_err(|_| HandleError::Stopped)?;
        }
        Ok(())
    }

    /// Sends `msg` to connection `id`.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> Result<(), HandleError> {
        self.command(Command::Send(id, OwnedMessage::new(msg)))
    }

    /// Sends `msg` to every open connection.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped.
    pub fn broadcast(&self, msg: Message<'_>) -> Result<(), HandleError> {
        self.command(Command::Broadcast(OwnedMessage::new(msg)))
    }

    /// Publishes `msg` to the subscribers of `topic`.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped.
    pub fn publish(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.command(Command::Publish(topic.to_owned(), OwnedMessage::new(msg)))
    }

    /// Publishes `msg` to the local subscribers of `topic` only, without relaying it: for a
    /// [`Relay`](crate::Relay) delivering what it brought from elsewhere.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped.
    pub fn publish_local(&self, topic: &str, msg: Message<'_>) -> Result<(), HandleError> {
        self.command(Command::PublishLocal(
            topic.to_owned(),
            OwnedMessage::new(msg),
        ))
    }

    /// Starts the close handshake with connection `id`.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), HandleError> {
        self.command(Command::Close(id, code, reason.to_owned()))
    }

    /// The server's [`Metrics`], as its reactor answers on its next turn: waits for it, at
    /// most `timeout`.
    ///
    /// # Errors
    ///
    /// [`HandleError::Full`] when the reactor's command queue is full, [`HandleError::Stopped`]
    /// when the server has stopped, [`HandleError::TimedOut`] when it did not answer in time.
    pub fn metrics(&self, timeout: Duration) -> Result<Metrics, HandleError> {
        let (reply, answer) = sync_channel(1);
        self.command(Command::Metrics(reply))?;
        answer.recv_timeout(timeout).map_err(|e| match e {
            std::sync::mpsc::RecvTimeoutError::Timeout => HandleError::TimedOut,
            std::sync::mpsc::RecvTimeoutError::Disconnected => HandleError::Stopped,
        })
    }

    /// Asks the server to shut down gracefully: [`Server::run`](crate::Server::run) then
    /// closes every connection with 1001, waits for the close handshakes up to
    /// `close_timeout`, and returns. Commands sent before this one are carried out first.
    ///
    /// # Errors
    ///
    /// [`HandleError::Stopped`] when the server has stopped.
    pub fn shutdown(&self) -> Result<(), HandleError> {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.woken.store(true, Ordering::Release);
        self.shared.waker.wake().map_err(|_| HandleError::Stopped)
    }
}

/// The reactor's end of the command queue.
#[derive(Debug)]
pub(crate) struct Commands {
    pub(crate) rx: Receiver<Command>,
    pub(crate) handle: Handle,
}
