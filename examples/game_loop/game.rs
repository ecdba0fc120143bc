//! The game: players moving on a bounded field, its wire protocol and its [`Handler`].
//!
//! The protocol is binary, little-endian:
//!
//! - client to server, one byte: the keys held (`UP | DOWN | LEFT | RIGHT`);
//! - server to client, `b'W'` then `id: u16, width: u16, height: u16` once, on open;
//! - server to client, every tick, a snapshot: `b'S'`, `tick: u32, slots: u16`, a bitmap of
//!   the occupied player slots (`slots` bits, bit `i % 8` of byte `i / 8`), then for each
//!   occupied slot in order its position packed in 3 bytes, `x | y << 12` (3.125 bytes a
//!   player). A player's slot is its id.

use std::net::SocketAddr;

use slab::Slab;
use wsloop::{CloseReason, ConnId, Context, Handler, HttpResponse, Message, Request, Upgrade};

/// Input bit: move up.
pub const UP: u8 = 1;
/// Input bit: move down.
pub const DOWN: u8 = 2;
/// Input bit: move left.
pub const LEFT: u8 = 4;
/// Input bit: move right.
pub const RIGHT: u8 = 8;

/// Tag of the welcome message.
const WELCOME: u8 = b'W';
/// Tag of a snapshot.
pub const SNAPSHOT: u8 = b'S';

/// The field, in game units (at most 4095, for the 12-bit packing; the page scales it).
const WIDTH: u16 = 1280;
const HEIGHT: u16 = 720;
/// A player's radius and speed (units, units per second): the page draws the player's own dot
/// with a radius of 11, so the field keeps every centre 12 from the edges.
const RADIUS: f32 = 12.0;
const SPEED: f32 = 240.0;

/// The page served on `GET /`.
const INDEX: &str = include_str!("index.html");
/// The page's icon, also served at `/favicon.ico` (no 404 for browsers that ask for it).
const FAVICON: &str = include_str!("favicon.svg");

/// One player: a position and the keys it holds.
#[derive(Debug, Clone, Copy)]
struct Player {
    x: f32,
    y: f32,
    keys: u8,
}

/// The game state, and the handler that feeds it: each connection is a player, keyed by its
/// slot in `players` (which is also its id on the wire).
#[derive(Debug)]
pub struct Game {
    players: Slab<Player>,
    tick: u32,
    seed: u64,
}

impl Game {
    /// An empty field.
    pub fn new() -> Game {
        Game {
            players: Slab::new(),
            tick: 0,
            seed: crate::seed::seed(),
        }
    }

    /// How many players are on the field.
    pub fn players(&self) -> usize {
        self.players.len()
    }

    /// Advances the simulation by `dt` seconds: every player moves by the keys it holds and
    /// stays on the field.
    pub fn step(&mut self, dt: f32) {
        self.tick = self.tick.wrapping_add(1);
        for (_, p) in self.players.iter_mut() {
            let (dx, dy) = direction(p.keys);
            p.x = (p.x + dx * SPEED * dt).clamp(RADIUS, f32::from(WIDTH) - RADIUS);
            p.y = (p.y + dy * SPEED * dt).clamp(RADIUS, f32::from(HEIGHT) - RADIUS);
        }
    }

    /// Encodes the current state into `out` (cleared first), as the module doc describes.
    pub fn snapshot(&self, out: &mut Vec<u8>) {
        let slots = self.players.iter().next_back().map_or(0, |(id, _)| id + 1);
        out.clear();
        out.push(SNAPSHOT);
        out.extend_from_slice(&self.tick.to_le_bytes());
        out.extend_from_slice(&(slots as u16).to_le_bytes());
        let bitmap = out.len();
        out.resize(bitmap + slots.div_ceil(8), 0);
        for (id, p) in self.players.iter() {
            out[bitmap + id / 8] |= 1 << (id % 8);
            let packed = u32::from(p.x as u16) | u32::from(p.y as u16) << 12;
            out.extend_from_slice(&packed.to_le_bytes()[..3]);
        }
    }

    /// A random spot on the field (xorshift; good enough for spawning).
    fn spawn_point(&mut self) -> (f32, f32) {
        let mut next = || {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            (self.seed >> 40) as f32 / (1u64 << 24) as f32
        };
        let x = RADIUS + next() * (f32::from(WIDTH) - 2.0 * RADIUS);
        let y = RADIUS + next() * (f32::from(HEIGHT) - 2.0 * RADIUS);
        (x, y)
    }
}

/// The unit vector (or zero) for the keys held; opposite keys cancel.
fn direction(keys: u8) -> (f32, f32) {
    let axis = |neg: u8, pos: u8| f32::from(keys & pos != 0) - f32::from(keys & neg != 0);
    let (dx, dy) = (axis(LEFT, RIGHT), axis(UP, DOWN));
    if dx != 0.0 && dy != 0.0 {
        (
            dx * std::f32::consts::FRAC_1_SQRT_2,
            dy * std::f32::consts::FRAC_1_SQRT_2,
        )
    } else {
        (dx, dy)
    }
}

impl Handler for Game {
    /// The player's slot in `players`.
    type State = usize;

    fn on_upgrade(&mut self, _req: &Request<'_, '_>, _peer: SocketAddr) -> Upgrade<usize> {
        if self.players.len() >= usize::from(u16::MAX) {
            return Upgrade::reject(503, "the field is full");
        }
        let (x, y) = self.spawn_point();
        Upgrade::accept(self.players.insert(Player { x, y, keys: 0 }))
    }

    fn on_http(&mut self, req: &Request<'_, '_>, _peer: SocketAddr) -> HttpResponse {
        match req.path() {
            "/" | "/index.html" => HttpResponse::new(200, "text/html; charset=utf-8", INDEX),
            "/favicon.svg" | "/favicon.ico" => HttpResponse::new(200, "image/svg+xml", FAVICON),
            _ => HttpResponse::text(404, "not found"),
        }
    }

    fn on_open(&mut self, ctx: &mut Context<'_, usize>, id: ConnId) {
        let Some(&mut player) = ctx.state(id) else {
            return;
        };
        let mut welcome = vec![WELCOME];
        for v in [player as u16, WIDTH, HEIGHT] {
            welcome.extend_from_slice(&v.to_le_bytes());
        }
        let _ = ctx.send(id, Message::Binary(&welcome));
    }

    fn on_message(&mut self, ctx: &mut Context<'_, usize>, id: ConnId, msg: Message<'_>) {
        let (Some(&mut player), Message::Binary(&[keys])) = (ctx.state(id), msg) else {
            return;
        };
        if let Some(p) = self.players.get_mut(player) {
            p.keys = keys & (UP | DOWN | LEFT | RIGHT);
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_, usize>, id: ConnId, _why: CloseReason<'_>) {
        if let Some(&mut player) = ctx.state(id) {
            self.players.try_remove(player);
        }
    }
}
