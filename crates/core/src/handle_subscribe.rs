//! SUBSCRIBE: one reason code per filter, replacement of existing subscriptions, and the
//! retained messages that a new subscription receives.

use crate::action::Action;
use crate::broker::{Broker, Conn, ConnId, SessionId};
use crate::message::Message;
use crate::session::{Delivery, SubEntry};
use crate::subscriptions::Added;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::time::Instant;
use tern_codec::{ByteStr, Packet, Properties, QoS, RetainHandling, SubAck, Subscribe, reason};

impl Broker {
    pub(crate) fn handle_subscribe(
        &mut self,
        conn: ConnId,
        c: Conn,
        s: Subscribe,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let v5 = c.version.is_v5();
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut reasons = Vec::with_capacity(s.filters.len());
        let mut retained_for: Vec<(ByteStr, SubEntry)> = Vec::new();
        // Filters refused for the subscription quota: logged once per SUBSCRIBE, not per filter
        // (a client sending thousands of filters must not turn each into a log line).
        let mut over_quota_count = 0usize;
        for (filter, options) in &s.filters {
            let shared = tern_topic::parse_shared(filter);
            if matches!(shared, Some(Ok(_))) && options.no_local {
                // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
                return self.protocol_failure(conn, reason::PROTOCOL_ERROR, now, out);
            }
        }
        for (filter, options) in s.filters {
            let mut valid = match tern_topic::parse_shared(&filter) {
                Some(parsed) => parsed.is_ok(),
                None => tern_topic::validate_topic_filter(&filter).is_ok(),
            };
            if valid && crate::handle_publish::topic_levels(&filter) > self.config.max_topic_levels
            {
                self.stats.limit_topic_levels += 1;
                valid = false;
            }
            let over_quota = self.sessions.get(&c.session).is_some_and(|s| {
                s.subscriptions.len() >= self.config.max_subscriptions_per_client
                    && !s.subscriptions.contains_key(filter.as_str())
            });
            let denied = valid
                && self.access.as_ref().is_some_and(|a| {
                    let info = self.sessions.get(&c.session).map(|s| &s.info);
                    info.is_some_and(|i| !a.can_subscribe(i, &filter))
                });
            let code = if !valid {
                if v5 {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else if over_quota {
                self.stats.limit_subscriptions += 1;
                over_quota_count += 1;
                if v5 {
                    reason::QUOTA_EXCEEDED
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else if denied {
                // [MQTT-3.9.3-?] SUBACK 0x87 (v5) / 0x80 (3.1.1) for a filter the ACL refuses.
                self.stats.acl_denied += 1;
                if v5 {
                    reason::NOT_AUTHORIZED
                } else {
                    reason::V3_SUBACK_FAILURE
                }
            } else {
                let entry = SubEntry {
                    options,
                    id: sub_id,
                };
                match self.add_subscription(c.session, &filter, entry, out) {
                    // Retained messages are not sent for a shared subscription
                    // (MQTT 5.0 section 4.8.2).
                    Added::Shared => {}
                    Added::Plain { existed } => {
                        // [MQTT-3.3.1-9] .. [MQTT-3.3.1-11] Retain Handling; 3.x always sends them.
                        let send_retained = match options.retain_handling {
                            RetainHandling::OnSubscribe => true,
                            RetainHandling::OnNewSubscribe => !existed,
                            RetainHandling::Never => false,
                        };
                        if send_retained {
                            retained_for.push((filter, entry));
                        }
                    }
                }
                options.qos as u8
            };
            reasons.push(code);
        }
        if over_quota_count > 0 {
            tracing::info!(
                conn,
                max = self.config.max_subscriptions_per_client,
                refused = over_quota_count,
                "subscription refused: limits.max_subscriptions_per_client reached"
            );
        }
        let suback = SubAck {
            packet_id: s.packet_id,
            reasons,
            properties: Properties::default(),
        };
        out.push(Action::send(conn, Packet::SubAck(suback)));
        if retained_for.is_empty() {
            return;
        }
        // All or none, decided once for the packet (`retained_burst`).
        let qos12 = retained_for
            .iter()
            .any(|(_, e)| e.options.qos != QoS::AtMostOnce);
        if self.may_send_retained(c.session, retained_for.len(), qos12, now) {
            let sent = self.send_retained(c.session, &retained_for, now, out);
            self.charge_retained(c.session, sent);
        }
    }

    /// Sends every retained message matching `filters` (the ones of one SUBSCRIBE that send
    /// them), each with the retain flag set ([MQTT-3.3.1-8]), none silently dropped; returns
    /// how many. Each message goes once, at the highest QoS its filters grant, as a routed
    /// message does to overlapping subscriptions: a packet that lists the same filter many
    /// times, or overlapping ones, costs one retained store at most, not one per filter.
    fn send_retained(
        &mut self,
        sid: SessionId,
        filters: &[(ByteStr, SubEntry)],
        now: Instant,
        out: &mut Vec<Action>,
    ) -> usize {
        let info = self
            .sessions
            .get(&sid)
            .map(|s| s.info.clone())
            .unwrap_or_default();
        let access = self.access.as_ref().filter(|a| a.restricts_reading());
        // Every filter of a packet has the packet's subscription identifier, if any.
        let sub_id = filters.first().and_then(|(_, e)| e.id);
        let mut found: Vec<(Arc<Message>, QoS)> = Vec::new();
        let mut index: HashMap<*const Message, usize> = HashMap::new();
        let several = filters.len() > 1;
        for (filter, entry) in filters {
            self.retained.for_each_match(filter, |topic, msg| {
                if msg.expired(now) || !access.is_none_or(|a| a.can_receive(&info, topic)) {
                    return;
                }
                let qos = entry.options.qos.min(msg.qos);
                if !several {
                    return found.push((Arc::clone(msg), qos));
                }
                match index.entry(Arc::as_ptr(msg)) {
                    Entry::Occupied(i) => {
                        let f = &mut found[*i.get()];
                        f.1 = f.1.max(qos);
                    }
                    Entry::Vacant(v) => {
                        v.insert(found.len());
                        found.push((Arc::clone(msg), qos));
                    }
                }
            });
        }
        let n = found.len();
        for (msg, qos) in found {
            let delivery = Delivery {
                qos,
                retain: true,
                sub_ids: sub_id.into_iter().collect(),
                msg,
                shared: None,
                seq: 0,
                pin: 0,
            };
            self.deliver_retained(sid, delivery, now, out);
        }
        n
    }
}
