//! A [`Router`]: several applications on one port, chosen per connection by subprotocol
//! and / or request path.

use std::net::SocketAddr;

use crate::{CloseReason, ConnId, Context, Handler, HttpResponse, Message, Request, Upgrade};

/// Hands each connection to one of several handlers that share a state type, by the
/// subprotocol the client offers (`Sec-WebSocket-Protocol`) and / or the request path.
///
/// Routes are tried in the order they were added; the first whose path matches (if it has
/// one) and whose subprotocol the client offers (if it has one) wins, and its subprotocol is
/// answered. A request that matches no route gets 404 if no route serves its path, or 400
/// naming the supported subprotocols if one does but none it offers fits. Plain HTTP GETs go
/// to the `on_http` of the first route for exactly their path, else of the first route for
/// any path (404 if there is none).
///
/// ```
/// # use std::net::SocketAddr;
/// # use wsloop::{Context, ConnId, Handler, Message, Request, Router, Upgrade};
/// struct Echo;
/// impl Handler for Echo {
///     type State = ();
///     fn on_upgrade(&mut self, _: &Request<'_, '_>, _: SocketAddr) -> Upgrade<()> {
///         Upgrade::accept(())
///     }
///     fn on_message(&mut self, ctx: &mut Context<'_, ()>, id: ConnId, msg: Message<'_>) {
///         let _ = ctx.send(id, msg);
///     }
/// }
/// let router = Router::new().protocol("echo", Echo).path("/echo", Echo);
/// ```
pub struct Router<S> {
    routes: Vec<Route<S>>,
    /// The route of each open connection, by slot index.
    by_conn: Vec<u16>,
    /// The route that accepted the upgrade being opened (`on_open` follows `on_upgrade`).
    pending: Option<u16>,
}

struct Route<S> {
    path: Option<String>,
    protocol: Option<String>,
    handler: Box<dyn Handler<State = S> + Send>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router {
            routes: Vec::new(),
            by_conn: Vec::new(),
            pending: None,
        }
    }
}

impl<S> Router<S> {
    /// A router with no routes.
    pub fn new() -> Router<S> {
        Router::default()
    }

    /// Adds a route for clients that offer subprotocol `name`, on any path.
    pub fn protocol(
        self,
        name: &str,
        handler: impl Handler<State = S> + Send + 'static,
    ) -> Router<S> {
        self.route(None, Some(name), handler)
    }

    /// Adds a route for requests to `path` (the query string is ignored), any subprotocol.
    pub fn path(self, path: &str, handler: impl Handler<State = S> + Send + 'static) -> Router<S> {
        self.route(Some(path), None, handler)
    }

    /// Adds a route for `path` and / or subprotocol `protocol` (`None`: any).
    pub fn route(
        mut self,
        path: Option<&str>,
        protocol: Option<&str>,
        handler: impl Handler<State = S> + Send + 'static,
    ) -> Router<S> {
        assert!(self.routes.len() < usize::from(u16::MAX), "too many routes");
        self.routes.push(Route {
            path: path.map(str::to_owned),
            protocol: protocol.map(str::to_owned),
            handler: Box::new(handler),
        });
        self
    }

    fn serves_path(route: &Route<S>, req: &Request<'_, '_>) -> bool {
        let path = req.path().split('?').next().unwrap_or("");
        route.path.as_deref().is_none_or(|p| p == path)
    }

    /// The handler of the route that `id` was opened on.
    fn handler(&mut self, id: ConnId) -> Option<&mut Box<dyn Handler<State = S> + Send>> {
        let route = *self.by_conn.get(id.index as usize)?;
        self.routes
            .get_mut(usize::from(route))
            .map(|r| &mut r.handler)
    }
}

impl<S> Handler for Router<S> {
    type State = S;

    fn on_upgrade(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> Upgrade<S> {
        self.pending = None;
        let chosen = self.routes.iter().position(|route| {
            Self::serves_path(route, req)
                && route
                    .protocol
                    .as_deref()
                    .is_none_or(|p| req.protocols().any(|offered| offered == p))
        });
        let Some(index) = chosen else {
            let supported: Vec<&str> = (self.routes.iter())
                .filter(|r| Self::serves_path(r, req))
                .filter_map(|r| r.protocol.as_deref())
                .collect();
            if supported.is_empty() {
                return Upgrade::reject(404, "no WebSocket application at this path");
            }
            let body = format!(
                "unsupported subprotocol; supported: {}",
                supported.join(", ")
            );
            return Upgrade::reject(400, &body);
        };
        let route = &mut self.routes[index];
        match route.handler.on_upgrade(req, peer) {
            Upgrade::Accept { protocol, state } => {
                self.pending = Some(index as u16);
                Upgrade::Accept {
                    protocol: protocol.or_else(|| route.protocol.clone()),
                    state,
                }
            }
            rejected => rejected,
        }
    }

    fn on_http(&mut self, req: &Request<'_, '_>, peer: SocketAddr) -> HttpResponse {
        let path = req.path().split('?').next().unwrap_or("");
        let exact = self
            .routes
            .iter()
            .position(|r| r.path.as_deref() == Some(path));
        let any = || self.routes.iter().position(|r| r.path.is_none());
        match exact.or_else(any) {
            Some(index) => self.routes[index].handler.on_http(req, peer),
            None => HttpResponse::text(404, "not found"),
        }
    }

    fn on_open(&mut self, ctx: &mut Context<'_, S>, id: ConnId) {
        let Some(route) = self.pending.take() else {
            return;
        };
        let index = id.index as usize;
        if self.by_conn.len() <= index {
            self.by_conn.resize(index + 1, 0);
        }
        self.by_conn[index] = route;
        if let Some(handler) = self.handler(id) {
            handler.on_open(ctx, id);
        }
    }

    fn on_message(&mut self, ctx: &mut Context<'_, S>, id: ConnId, msg: Message<'_>) {
        if let Some(handler) = self.handler(id) {
            handler.on_message(ctx, id, msg);
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_, S>, id: ConnId, why: CloseReason<'_>) {
        if let Some(handler) = self.handler(id) {
            handler.on_close(ctx, id, why);
        }
    }

    fn on_drain(&mut self, ctx: &mut Context<'_, S>, id: ConnId) {
        if let Some(handler) = self.handler(id) {
            handler.on_drain(ctx, id);
        }
    }
}
