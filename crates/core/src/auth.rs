//! MQTT 5 enhanced authentication (MQTT 5.0 section 4.12): a pluggable challenge/response
//! exchange carried by AUTH packets, before CONNACK and for re-authentication.
//!
//! The core only runs the exchange; methods (SCRAM, ...) implement [`EnhancedAuth`] elsewhere
//! and are registered with [`Broker::add_auth_method`]. A CONNECT naming a method nobody
//! registered gets CONNACK 0x8C.

use crate::action::{Action, CloseReason};
use crate::broker::{Broker, ConnId};
use bytes::Bytes;
use std::time::{Duration, Instant};
use tern_codec::{Auth, ByteStr, Connect, Packet, Properties, PropertyValues, reason};

/// What a method says after each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this challenge (AUTH 0x18) and wait for the client's answer.
    Continue(Bytes),
    /// Authenticated; optional final data for the client.
    Success(Option<Bytes>),
    /// Refused with this reason code (0x86, 0x87, 0x8C, ...).
    Fail(u8),
}

/// One running exchange.
pub trait AuthExchange: Send {
    /// The client answered with `data`.
    fn step(&mut self, data: Option<&[u8]>) -> AuthStep;
}

/// An authentication method.
pub trait EnhancedAuth: Send {
    /// The Authentication Method name, e.g. `SCRAM-SHA-256`.
    fn method(&self) -> &str;
    /// Starts an exchange with the data of the CONNECT (or re-authentication AUTH).
    fn start(
        &self,
        client_id: &str,
        username: Option<&str>,
        data: Option<&[u8]>,
    ) -> (Box<dyn AuthExchange>, AuthStep);
}

/// A CONNECT waiting for its authentication exchange to finish.
pub(crate) struct PendingAuth {
    connect: Connect,
    client_id: ByteStr,
    assigned: Option<ByteStr>,
    method: ByteStr,
    exchange: Box<dyn AuthExchange>,
    /// When its CONNECT came: the exchange must finish within `Config::auth_timeout_secs`.
    since: Instant,
}

impl Broker {
    /// Registers an enhanced authentication method.
    pub fn add_auth_method(&mut self, method: Box<dyn EnhancedAuth>) {
        self.auth_methods.push(method);
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_connect_auth(
        &mut self,
        conn: ConnId,
        connect: Connect,
        client_id: ByteStr,
        assigned: Option<ByteStr>,
        method: &ByteStr,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(m) = self
            .auth_methods
            .iter()
            .find(|m| m.method() == method.as_str())
        else {
            return self.refuse(
                conn,
                connect.protocol,
                reason::BAD_AUTHENTICATION_METHOD,
                out,
            );
        };
        let data = connect.properties.authentication_data.clone();
        let (exchange, step) = m.start(&client_id, connect.username.as_deref(), data.as_deref());
        let pending = PendingAuth {
            connect,
            client_id,
            assigned,
            method: method.clone(),
            exchange,
            since: now,
        };
        self.connect_auth_step(conn, pending, step, now, out);
    }

    fn connect_auth_step(
        &mut self,
        conn: ConnId,
        p: PendingAuth,
        step: AuthStep,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        match step {
            AuthStep::Continue(data) => {
                out.push(Action::send(
                    conn,
                    auth_packet(reason::CONTINUE_AUTHENTICATION, &p.method, Some(data)),
                ));
                self.pending_auth.insert(conn, p);
            }
            AuthStep::Success(data) => {
                let auth = Some((p.method, data));
                self.accept_connect(conn, p.connect, p.client_id, p.assigned, auth, now, out);
            }
            AuthStep::Fail(code) => self.refuse(conn, p.connect.protocol, code, out),
        }
    }

    /// A packet from a connection whose CONNECT is still authenticating.
    pub(crate) fn handle_pending_auth_packet(
        &mut self,
        conn: ConnId,
        packet: Packet,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(mut p) = self.pending_auth.remove(&conn) else {
            return;
        };
        match packet {
            // [MQTT-4.12.0-3] The client continues with AUTH 0x18 and the same method.
            Packet::Auth(a)
                if a.reason == reason::CONTINUE_AUTHENTICATION
                    && a.properties.authentication_method.as_ref() == Some(&p.method) =>
            {
                let step = p.exchange.step(a.properties.authentication_data.as_deref());
                self.connect_auth_step(conn, p, step, now, out);
            }
            Packet::Disconnect(_) => out.push(Action::Close(conn, CloseReason::ClientDisconnect)),
            // Anything else before CONNACK is a protocol error [MQTT-3.1.0-1] / [MQTT-4.12.0-4].
            _ => self.refuse(conn, p.connect.protocol, reason::PROTOCOL_ERROR, out),
        }
    }

    /// Refuses (CONNACK 0x87, counted as an authentication failure) the CONNECTs whose
    /// authentication exchange has not finished within `Config::auth_timeout_secs`. Until its
    /// CONNACK a connection has no keep alive (the I/O layer's connect timeout ends with the
    /// CONNECT), and an exchange the client leaves unanswered would otherwise hold its
    /// connection and CONNECT for good.
    pub(crate) fn expire_pending_auth(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.pending_auth.is_empty() || self.config.auth_timeout_secs == 0 {
            return;
        }
        let limit = Duration::from_secs(u64::from(self.config.auth_timeout_secs));
        let due: Vec<ConnId> = self
            .pending_auth
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) >= limit)
            .map(|(conn, _)| *conn)
            .collect();
        for conn in due {
            let Some(p) = self.pending_auth.remove(&conn) else {
                continue;
            };
            tracing::info!(
                conn,
                client_id = %p.client_id,
                method = %p.method,
                "connection refused: authentication not finished within {} s",
                self.config.auth_timeout_secs
            );
            self.refuse(conn, p.connect.protocol, reason::NOT_AUTHORIZED, out);
        }
    }

    /// The I/O layer lost a connection that never finished CONNECT.
    pub(crate) fn forget_pending(&mut self, conn: ConnId) {
        self.pending_auth.remove(&conn);
        self.pending_info.remove(&conn);
        self.reauth.remove(&conn);
    }

    /// AUTH on an established connection: re-authentication (MQTT 5.0 section 4.12.1).
    pub(crate) fn handle_auth(
        &mut self,
        conn: ConnId,
        a: Auth,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let method = a
            .properties
            .authentication_method
            .clone()
            .unwrap_or_default();
        let data = a.properties.authentication_data.as_deref();
        let step = match (a.reason, self.reauth.get_mut(&conn)) {
            (reason::CONTINUE_AUTHENTICATION, Some(exchange)) => exchange.step(data),
            (reason::RE_AUTHENTICATE, _) => {
                let Some(m) = self
                    .auth_methods
                    .iter()
                    .find(|m| m.method() == method.as_str())
                else {
                    return self.protocol_failure(
                        conn,
                        reason::BAD_AUTHENTICATION_METHOD,
                        now,
                        out,
                    );
                };
                let session = self
                    .conns
                    .get(&conn)
                    .and_then(|c| self.sessions.get(&c.session));
                let username = session.and_then(|s| s.info.username.clone());
                let client_id = self
                    .conns
                    .get(&conn)
                    .and_then(|c| self.sessions.get(&c.session))
                    .map(|s| s.client_id.clone())
                    .unwrap_or_default();
                let (exchange, step) = m.start(&client_id, username.as_deref(), data);
                self.reauth.insert(conn, exchange);
                step
            }
            _ => return self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out),
        };
        match step {
            AuthStep::Continue(d) => out.push(Action::send(
                conn,
                auth_packet(reason::CONTINUE_AUTHENTICATION, &method, Some(d)),
            )),
            AuthStep::Success(d) => {
                self.reauth.remove(&conn);
                out.push(Action::send(conn, auth_packet(reason::SUCCESS, &method, d)));
            }
            AuthStep::Fail(code) => {
                self.reauth.remove(&conn);
                self.protocol_failure(conn, code, now, out);
            }
        }
    }
}

fn auth_packet(code: u8, method: &ByteStr, data: Option<Bytes>) -> Packet {
    let properties: Properties = PropertyValues {
        authentication_method: Some(method.clone()),
        authentication_data: data,
        ..Default::default()
    }
    .into();
    Packet::Auth(Auth {
        reason: code,
        properties,
    })
}
