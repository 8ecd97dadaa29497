//! PUBLISH from a client, at QoS 0, 1 and 2.

use crate::action::Action;
use crate::broker::{Broker, Conn, ConnId};
use crate::message::Message;
use std::time::{Duration, Instant};
use tern_codec::{Ack, Packet, Properties, Publish, QoS, reason};

impl Broker {
    pub(crate) fn handle_publish(
        &mut self,
        conn: ConnId,
        c: Conn,
        mut p: Publish,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        // Set only by this PUBLISH's own routing (wills and admin publishes route too).
        self.throttle.congested = None;
        if let Some(alias) = p.properties.topic_alias {
            // [MQTT-3.3.2-9] / [MQTT-3.3.2-10] Aliases from 1 up to our Topic Alias Maximum.
            if alias == 0 || alias > self.config.topic_alias_maximum || !c.version.is_v5() {
                return self.protocol_failure(conn, reason::TOPIC_ALIAS_INVALID, now, out);
            }
            let Some(session) = self.sessions.get_mut(&c.session) else {
                return;
            };
            let aliases = session.aliases.get_or_insert_with(Default::default);
            if p.topic.is_empty() {
                match aliases.incoming.get(&alias) {
                    Some(topic) => p.topic = topic.clone(),
                    // An alias that was never set up: protocol error (MQTT 5.0 section 3.3.4).
                    None => return self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out),
                }
            } else if aliases.incoming.get(&alias) != Some(&p.topic) {
                // Kept for the connection's life: not as a slice of the read it came in.
                aliases.incoming.insert(alias, p.topic.detached());
            }
        }
        let Ok(levels) = self.route_cache.topic_levels(&p.topic) else {
            // [MQTT-3.3.2-2] No wildcards in a topic name; [MQTT-4.7.3-1] not empty.
            return self.protocol_failure(conn, reason::TOPIC_NAME_INVALID, now, out);
        };
        if levels > self.config.max_topic_levels {
            self.stats.limit_topic_levels += 1;
            tracing::info!(
                conn,
                levels,
                max = self.config.max_topic_levels,
                "topic has too many levels (limits.max_topic_levels)"
            );
            return self.protocol_failure(conn, reason::TOPIC_NAME_INVALID, now, out);
        }
        if self.config.max_message_rate > 0
            && let Some(session) = self.sessions.get_mut(&c.session)
        {
            // Token bucket: `max_message_rate` per second, bursts up to one second's worth.
            let rate = f64::from(self.config.max_message_rate);
            let elapsed = session
                .rate_at
                .map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64());
            session.rate_tokens = (session.rate_tokens + elapsed * rate).min(rate);
            session.rate_at = Some(now);
            if session.rate_tokens < 1.0 {
                self.stats.limit_message_rate += 1;
                tracing::info!(client_id = %session.client_id, max = self.config.max_message_rate, "message rate too high (limits.max_message_rate)");
                return self.protocol_failure(conn, reason::MESSAGE_RATE_TOO_HIGH, now, out);
            }
            session.rate_tokens -= 1.0;
        }
        if p.retain && !self.config.retain_available {
            // [MQTT-3.3.1-?] Retain not supported (advertised as Retain Available 0).
            return self.protocol_failure(conn, reason::RETAIN_NOT_SUPPORTED, now, out);
        }
        if p.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&p.payload).is_err()
        {
            // MQTT 5.0 section 3.3.2.3.2: the payload says it is UTF-8 and is not; refuse it
            // with 0x99 (PUBACK/PUBREC for QoS 1/2, DISCONNECT for QoS 0).
            let pid = p.packet_id.unwrap_or(0);
            let refusal = Ack {
                packet_id: pid,
                reason: reason::PAYLOAD_FORMAT_INVALID,
                properties: Properties::default(),
            };
            match p.qos {
                QoS::AtMostOnce => {
                    return self.protocol_failure(conn, reason::PAYLOAD_FORMAT_INVALID, now, out);
                }
                QoS::AtLeastOnce => self.ack_publish(conn, Packet::PubAck(refusal), now, out),
                QoS::ExactlyOnce => self.ack_publish(conn, Packet::PubRec(refusal), now, out),
            }
            return;
        }
        if let Some(access) = &self.access
            && let Some(session) = self.sessions.get(&c.session)
            && !access.can_publish(&session.info, &p.topic)
        {
            // v5: PUBACK/PUBREC 0x87; 3.x has no way to say no, so the message is acknowledged
            // and dropped, as Mosquitto does.
            self.stats.acl_denied += 1;
            tracing::debug!(client_id = %session.client_id, topic = %p.topic, "publish denied by ACL");
            let pid = p.packet_id.unwrap_or(0);
            let code = if c.version.is_v5() {
                reason::NOT_AUTHORIZED
            } else {
                reason::SUCCESS
            };
            let ack = Ack {
                packet_id: pid,
                reason: code,
                properties: Properties::default(),
            };
            match p.qos {
                QoS::AtMostOnce => {}
                QoS::AtLeastOnce => self.ack_publish(conn, Packet::PubAck(ack), now, out),
                QoS::ExactlyOnce if c.version.is_v5() => {
                    self.ack_publish(conn, Packet::PubRec(ack), now, out)
                }
                QoS::ExactlyOnce => {
                    // Complete the 3.x flow normally: the PUBREL that follows gets its PUBCOMP.
                    if let Some(session) = self.sessions.get_mut(&c.session) {
                        session.inbound_qos2.insert(pid);
                    }
                    self.ack_publish(conn, Packet::PubRec(ack), now, out);
                }
            }
            return;
        }
        self.stats.publish_received += 1;
        self.stats.publish_received_by_qos[p.qos as usize] += 1;
        self.stats.bytes_payload_received += p.payload.len() as u64;

        let qos = p.qos;
        let packet_id = p.packet_id.unwrap_or(0);
        if qos == QoS::ExactlyOnce {
            let Some(session) = self.sessions.get_mut(&c.session) else {
                return;
            };
            if session.inbound_qos2.contains(&packet_id) {
                // [MQTT-4.3.3-9] A re-sent PUBLISH before PUBREL is acknowledged again but not
                // forwarded again: exactly once.
                self.ack_publish(conn, Packet::PubRec(Ack::new(packet_id)), now, out);
                return;
            }
            if c.version.is_v5()
                && session.inbound_qos2.len() >= usize::from(self.config.receive_maximum)
            {
                // [MQTT-3.3.4-7] (v5) The client exceeded the Receive Maximum we advertised.
                return self.protocol_failure(conn, reason::RECEIVE_MAXIMUM_EXCEEDED, now, out);
            }
            // MQTT 3.x has no Receive Maximum: a client may have as many unreleased as it has
            // packet ids (a burst of 1,000 QoS 2 PUBLISHes from MQTT.js, say; Mosquitto takes
            // them). The set is bounded by those 65,535 ids.
            session.inbound_qos2.insert(packet_id);
            self.persist.inbound(session, packet_id, out);
        }

        strip_per_hop(&mut p.properties);
        let expires_at = p
            .properties
            .message_expiry_interval
            .map(|s| now + Duration::from_secs(u64::from(s)));
        let msg = Message {
            id: self.new_message_id(),
            topic: p.topic,
            payload: p.payload,
            qos,
            retain: p.retain,
            properties: p.properties,
            expires_at,
            origin: Some(c.session),
            read: self.read,
            own_bytes: false,
        };
        // Routing notes a connected subscriber whose queue is long (back-pressure, `throttle`).
        let msg = self.messages.share(msg);
        self.publish_message(msg, now, out);

        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.ack_publish(conn, Packet::PubAck(Ack::new(packet_id)), now, out)
            }
            QoS::ExactlyOnce => {
                self.ack_publish(conn, Packet::PubRec(Ack::new(packet_id)), now, out)
            }
        }
    }
}

/// Levels of a topic name or filter ("a/b" has two).
pub(crate) fn topic_levels(topic: &str) -> usize {
    topic.bytes().filter(|&b| b == b'/').count() + 1
}

/// Topic alias and subscription identifiers belong to one hop: a message does not keep them
/// (a publisher's alias-only set is then freed).
pub(crate) fn strip_per_hop(p: &mut Properties) {
    p.strip(|v| {
        v.topic_alias = None;
        v.subscription_identifiers.clear();
    });
}
