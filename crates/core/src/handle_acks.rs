//! PUBACK, PUBREC, PUBREL and PUBCOMP from a client.

use crate::action::Action;
use crate::broker::{Broker, Conn, ConnId};
use crate::session::OutState;
use std::time::Instant;
use tern_codec::{Ack, Packet, QoS, reason};

impl Broker {
    /// PUBACK completes an outbound QoS 1 delivery.
    pub(crate) fn handle_puback(&mut self, c: Conn, a: Ack, now: Instant, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        if let Some(i) = session.inflight_position(a.packet_id)
            && session.inflight[i].delivery.qos == QoS::AtLeastOnce
            && let Some(done) = session.inflight.remove(i)
        {
            self.persist.completed(session, &done.delivery, out);
            self.pump(c.session, now, out);
        }
    }

    /// PUBREC: the client has the QoS 2 message; answer PUBREL ([MQTT-4.3.3-4]).
    pub(crate) fn handle_pubrec(
        &mut self,
        conn: ConnId,
        c: Conn,
        a: Ack,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        let Some(i) = session.inflight_position(a.packet_id) else {
            let mut rel = Ack::new(a.packet_id);
            if c.version.is_v5() {
                rel.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
            }
            out.push(Action::send(conn, Packet::PubRel(rel)));
            return;
        };
        if a.reason >= 0x80 {
            // v5: the client refused the message; the delivery ends here (MQTT 5.0 section 4.3.3).
            if let Some(done) = session.inflight.remove(i) {
                self.persist.completed(session, &done.delivery, out);
            }
            self.pump(c.session, now, out);
            return;
        }
        session.inflight[i].state = OutState::Released;
        session.inflight[i].sent_at = now;
        self.persist
            .released(session, &session.inflight[i].delivery, out);
        out.push(Action::send(conn, Packet::PubRel(Ack::new(a.packet_id))));
    }

    /// PUBREL releases an inbound QoS 2 packet id; answer PUBCOMP ([MQTT-4.3.3-11]).
    pub(crate) fn handle_pubrel(&mut self, conn: ConnId, c: Conn, a: Ack, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        let mut comp = Ack::new(a.packet_id);
        if session.inbound_qos2.remove(&a.packet_id) {
            self.persist.inbound_released(session, a.packet_id, out);
        } else if c.version.is_v5() {
            comp.reason = reason::PACKET_IDENTIFIER_NOT_FOUND;
        }
        out.push(Action::send(conn, Packet::PubComp(comp)));
    }

    /// PUBCOMP completes an outbound QoS 2 delivery.
    pub(crate) fn handle_pubcomp(&mut self, c: Conn, a: Ack, now: Instant, out: &mut Vec<Action>) {
        let Some(session) = self.sessions.get_mut(&c.session) else {
            return;
        };
        if let Some(i) = session.inflight_position(a.packet_id)
            && session.inflight[i].state == OutState::Released
            && let Some(done) = session.inflight.remove(i)
        {
            self.persist.completed(session, &done.delivery, out);
            self.pump(c.session, now, out);
        }
    }
}
