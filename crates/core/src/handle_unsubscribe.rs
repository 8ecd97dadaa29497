//! UNSUBSCRIBE.

use crate::action::Action;
use crate::broker::{Broker, Conn, ConnId};
use tern_codec::{Packet, Properties, UnsubAck, Unsubscribe, reason};

impl Broker {
    pub(crate) fn handle_unsubscribe(
        &mut self,
        conn: ConnId,
        c: Conn,
        u: Unsubscribe,
        out: &mut Vec<Action>,
    ) {
        let mut reasons = Vec::new();
        for filter in &u.filters {
            let existed = self.remove_subscription(c.session, filter, out);
            if c.version.is_v5() {
                reasons.push(if existed {
                    reason::SUCCESS
                } else {
                    reason::NO_SUBSCRIPTION_EXISTED
                });
            }
        }
        // [MQTT-3.10.4-4] UNSUBACK even when nothing was removed.
        let ack = UnsubAck {
            packet_id: u.packet_id,
            reasons,
            properties: Properties::default(),
        };
        out.push(Action::send(conn, Packet::UnsubAck(ack)));
    }
}
