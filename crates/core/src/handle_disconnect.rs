//! DISCONNECT from a client.

use crate::action::{Action, CloseReason};
use crate::broker::{Broker, Conn, ConnId};
use std::time::Instant;
use tern_codec::{Disconnect, reason};

impl Broker {
    pub(crate) fn handle_disconnect(
        &mut self,
        conn: ConnId,
        c: Conn,
        d: Disconnect,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let Some(new_interval) = d.properties.session_expiry_interval {
            let Some(session) = self.sessions.get_mut(&c.session) else {
                return;
            };
            if session.expiry_interval == 0 && new_interval != 0 {
                // [MQTT-3.14.2-2] A session that was to end at disconnect cannot be revived here.
                return self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out);
            }
            session.expiry_interval = new_interval.min(self.config.max_session_expiry);
        }
        // [MQTT-3.14.4-3] A normal DISCONNECT discards the will; reason 0x04 asks for it.
        let with_will = d.reason == reason::DISCONNECT_WITH_WILL;
        out.push(Action::Close(conn, CloseReason::ClientDisconnect));
        self.detach(conn, with_will, now, out);
    }
}
