//! CONNECT: protocol checks, client identifier, session takeover, clean start and resumption.

use crate::action::{Action, CloseReason};
use crate::broker::{Broker, Conn, ConnId, SessionId};
use crate::session::Session;
use std::time::Instant;
use tern_codec::{ByteStr, ConnAck, Connect, Packet, Properties, ProtocolVersion, reason};

/// MQTT 3.1 limits client identifiers to 23 characters (MQTT 3.1 section 3.1, "Client Identifier").
const V3_1_MAX_CLIENT_ID: usize = 23;

impl Broker {
    pub(crate) fn handle_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let version = connect.protocol;
        let v5 = version.is_v5();
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            // [MQTT-3.1.3-8] A 3.1.1 client with an empty id must ask for a clean session;
            // MQTT 3.1 does not allow an empty id at all. v5 always gets one assigned [MQTT-3.2.2-16].
            if version == ProtocolVersion::V3_1
                || (version == ProtocolVersion::V3_1_1 && !connect.clean_start)
            {
                return self.refuse(conn, version, reason::v3::IDENTIFIER_REJECTED, out);
            }
            let id = ByteStr::from(format!(
                "{}{}",
                self.config.assigned_id_prefix, self.next_assigned_id
            ));
            self.next_assigned_id += 1;
            if v5 {
                assigned = Some(id.clone());
            }
            id
        } else {
            if version == ProtocolVersion::V3_1 && connect.client_id.len() > V3_1_MAX_CLIENT_ID {
                return self.refuse(conn, version, reason::v3::IDENTIFIER_REJECTED, out);
            }
            // [MQTT-3.1.3-5] allows any server 23 bytes; longer ones up to a limit of ours (a
            // session keeps its id, and the durable store writes it in every record).
            let max = self.config.max_client_id_len;
            if max > 0 && connect.client_id.len() > max {
                self.stats.limit_client_id_len += 1;
                tracing::info!(
                    len = connect.client_id.len(),
                    max,
                    "connection refused: client id longer than limits.max_client_id_len"
                );
                return self.refuse(conn, version, reason::v3::IDENTIFIER_REJECTED, out);
            }
            // Detached: the session keeps it as its key for as long as it lives, and the
            // CONNECT it is a slice of may carry up to `max_packet_size` of properties.
            connect.client_id.detached()
        };
        // [MQTT-3.1.3-11] The Will Topic must be a valid topic name.
        if let Some(will) = &connect.will
            && tern_topic::validate_topic_name(&will.topic).is_err()
        {
            return self.refuse(conn, version, reason::TOPIC_NAME_INVALID, out);
        }
        // Taken, not copied: from here on the session's `info` has it (and a connection sends
        // one CONNECT).
        let (peer, listener, cert_cn) = self.peers.remove(&conn).unwrap_or_default();
        let info = crate::access::ClientInfo {
            client_id: client_id.to_string(),
            username: connect.username.as_ref().map(|u| u.to_string()),
            peer,
            listener,
            cert_cn,
        };
        if let Some(access) = &self.access {
            // With an enhanced authentication method and a user name, the method checks the
            // credentials (SCRAM sends no password); without a user name the anonymous rules
            // still apply.
            let by_method =
                connect.properties.authentication_method.is_some() && info.username.is_some();
            let decision = if by_method {
                crate::access::AuthDecision::Allow
            } else {
                access.authenticate(&info, connect.password.as_deref())
            };
            match decision {
                crate::access::AuthDecision::Allow => {}
                crate::access::AuthDecision::BadCredentials => {
                    tracing::info!(client_id = %client_id, username = ?info.username, peer = ?info.peer, "connection refused: bad user name or password");
                    return self.refuse(conn, version, reason::BAD_USER_NAME_OR_PASSWORD, out);
                }
                crate::access::AuthDecision::NotAuthorized => {
                    tracing::info!(client_id = %client_id, username = ?info.username, peer = ?info.peer, "connection refused: not authorized");
                    return self.refuse(conn, version, reason::NOT_AUTHORIZED, out);
                }
            }
            // The will is a publish: the ACL must allow its topic.
            if let Some(will) = &connect.will
                && !access.can_publish(&info, &will.topic)
            {
                return self.refuse(conn, version, reason::NOT_AUTHORIZED, out);
            }
        }
        self.pending_info.insert(conn, info);
        if let Some(method) = connect.properties.authentication_method.clone() {
            // MQTT 5.0 section 4.12: enhanced authentication runs before CONNACK.
            return self.start_connect_auth(conn, connect, client_id, assigned, &method, now, out);
        }
        self.accept_connect(conn, connect, client_id, assigned, None, now, out);
    }

    /// Completes a CONNECT that passed every check (and authentication, if any): takeover,
    /// session creation or resumption, CONNACK, then whatever the session has waiting.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn accept_connect(
        &mut self,
        conn: ConnId,
        connect: Connect,
        client_id: ByteStr,
        assigned: Option<ByteStr>,
        auth: Option<(ByteStr, Option<bytes::Bytes>)>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let version = connect.protocol;
        let v5 = version.is_v5();

        let expiry_interval = if v5 {
            connect
                .properties
                .session_expiry_interval
                .unwrap_or(0)
                .min(self.config.max_session_expiry)
        } else if connect.clean_start {
            0
        } else {
            self.config.v3_session_expiry
        };

        // Checked before the takeover below, so that a refused CONNECT leaves the connection
        // and the session of its client id alone.
        let found = self
            .client_ids
            .get(&client_id)
            .and_then(|sid| self.sessions.get(sid));
        // A session belongs to the user who made it: another user who comes with its client id
        // is refused, and neither takes the connection over nor gets the queued messages and
        // subscriptions (which its read ACL may not allow). The owner is in the durable record of
        // a persistent session, so this holds after a restart. Anonymous sessions have no owner
        // and go to whoever comes with their id.
        let new_user = self
            .pending_info
            .get(&conn)
            .and_then(|i| i.username.as_deref());
        if let Some(owner) = found.and_then(|s| s.info.username.as_deref())
            && Some(owner) != new_user
        {
            self.stats.limit_session_owner += 1;
            tracing::info!(
                client_id = %client_id,
                owner,
                username = ?new_user,
                "connection refused: the client id's session belongs to another user"
            );
            return self.refuse(conn, version, reason::v3::IDENTIFIER_REJECTED, out);
        }
        // A new session that outlives its connection counts against `max_sessions` (sessions
        // that end with their connection are bounded by the connections). The one of this
        // client id lives on only if it outlives its connection too (the takeover ends it
        // otherwise).
        let stays = found.is_some_and(|s| s.expiry_interval > 0);
        let max = self.config.max_sessions;
        let others = self.sessions.len() - usize::from(found.is_some());
        if !stays && expiry_interval > 0 && max > 0 && others >= max {
            self.stats.limit_sessions += 1;
            tracing::warn!(
                client_id = %client_id,
                sessions = self.sessions.len(),
                "connection refused: limits.max_sessions reached (a new persistent session)"
            );
            return self.refuse(conn, version, reason::QUOTA_EXCEEDED, out);
        }

        // Session takeover [MQTT-3.1.4-3]: the existing connection of this client id is closed.
        // The old connection ended without DISCONNECT, so its will applies: detaching it schedules
        // the will (or sends it, without will delay) and ends the session if its expiry is 0. A
        // delayed will is then cancelled below when the session is resumed, or sent when clean
        // start ends the session (MQTT 5.0 section 3.1.3.2.2).
        let old_conn = found.and_then(|s| s.conn);
        if let Some(old) = old_conn {
            self.stats.takeovers += 1;
            self.send_disconnect(old, reason::SESSION_TAKEN_OVER, out);
            out.push(Action::Close(old, CloseReason::TakenOver));
            self.detach(old, true, now, out);
        }

        let existing = self.client_ids.get(&client_id).copied();
        let (sid, session_present) = match existing {
            // [MQTT-3.1.2-4] / [MQTT-3.1.2-5] Clean start discards any existing session.
            Some(sid) if connect.clean_start => {
                self.discard_session_for_clean_start(sid, now, out);
                (self.create_session(client_id.clone(), version), false)
            }
            Some(sid) => (sid, true),
            None => (self.create_session(client_id.clone(), version), false),
        };
        // The client is back: a delayed will from its previous connection is not sent
        // (MQTT 5.0 section 3.1.3.2.2).
        self.cancel_pending_will(sid, out);

        let window = if v5 {
            connect
                .properties
                .receive_maximum
                .unwrap_or(u16::MAX)
                .min(self.config.max_inflight)
        } else {
            self.config.max_inflight
        }
        .max(1);
        let session = self
            .sessions
            .get_mut(&sid)
            .expect("session just created or found");
        session.conn = Some(conn);
        session.version = version;
        session.info = self.pending_info.remove(&conn).unwrap_or_default();
        session.expiry_interval = expiry_interval;
        session.expires_at = None;
        session.will = connect.will.map(|w| Box::new(w.detached()));
        session.window = window;
        session.keep_alive = match self.config.max_keep_alive {
            max if max > 0 && (connect.keep_alive == 0 || connect.keep_alive > max) && v5 => max,
            _ => connect.keep_alive,
        };
        session.connected_at = Some(now);
        // [MQTT-3.3.2-7] Topic aliases live and die with the network connection.
        session.aliases = None;
        // The broker keeps each topic it aliases for the connection's life: it uses no more
        // aliases than it grants, however many the client allows (up to 65,535 topics).
        session.alias_out_max = if v5 {
            connect
                .properties
                .topic_alias_maximum
                .unwrap_or(0)
                .min(self.config.topic_alias_maximum)
        } else {
            0
        };
        session.max_packet_size = if v5 {
            connect.properties.maximum_packet_size
        } else {
            None
        };
        // Only a session that outlives its connection is worth a disk write.
        let persist = self.config.persistence && expiry_interval > 0;
        if session.persisted && !persist {
            session.queue.page_in_all(&mut self.pager);
            let queued: Vec<u64> = session.queue.iter_memory().map(|d| d.msg.id).collect();
            self.persist
                .session_deleted(session, queued.into_iter(), out);
        }
        session.persisted = persist;
        self.persist.session(session, now, out);
        self.shared_presence(sid, true);
        self.conns.insert(
            conn,
            Conn {
                session: sid,
                version,
            },
        );
        self.stats.connects += 1;
        self.stats.max_connected = self.stats.max_connected.max(self.conns.len() as u64);

        let mut properties = Properties::default();
        if v5 {
            properties.assigned_client_identifier = assigned;
            properties.receive_maximum = Some(self.config.receive_maximum);
            properties.maximum_packet_size = Some(self.config.max_packet_size);
            properties.topic_alias_maximum =
                Some(self.config.topic_alias_maximum).filter(|&m| m > 0);
            if !self.config.retain_available {
                properties.retain_available = Some(0);
            }
            if connect.properties.session_expiry_interval.unwrap_or(0) != expiry_interval {
                properties.session_expiry_interval = Some(expiry_interval);
            }
            if connect.properties.request_response_information == Some(1) {
                // A topic prefix this client may use for responses (MQTT 5.0 section 4.10).
                properties.response_information =
                    Some(ByteStr::from(format!("response/{client_id}")));
            }
            if let Some((method, data)) = auth {
                properties.authentication_method = Some(method);
                properties.authentication_data = data;
            }
            let max_ka = self.config.max_keep_alive;
            if max_ka > 0 && (connect.keep_alive == 0 || connect.keep_alive > max_ka) {
                properties.server_keep_alive = Some(max_ka);
            }
        }
        let connack = ConnAck {
            session_present,
            code: reason::SUCCESS,
            properties,
        };
        out.push(Action::send(conn, Packet::ConnAck(connack)));
        if session_present {
            self.resend_inflight(sid, now, out);
        }
        self.pump(sid, now, out);
    }

    /// Refuses a CONNECT with `code` (a v5 reason code, or a 3.x return code that is mapped).
    pub(crate) fn refuse(
        &mut self,
        conn: ConnId,
        version: ProtocolVersion,
        code: u8,
        out: &mut Vec<Action>,
    ) {
        self.peers.remove(&conn);
        self.pending_info.remove(&conn);
        self.stats.connects_refused += 1;
        if matches!(
            code,
            reason::BAD_USER_NAME_OR_PASSWORD
                | reason::NOT_AUTHORIZED
                | reason::v3::BAD_USER_NAME_OR_PASSWORD
                | reason::v3::NOT_AUTHORIZED
        ) {
            self.stats.auth_failures += 1;
        }
        let code = if version.is_v5() {
            match code {
                reason::v3::IDENTIFIER_REJECTED => reason::CLIENT_IDENTIFIER_NOT_VALID,
                c => c,
            }
        } else {
            match code {
                c if c < 0x80 => c,
                reason::BAD_USER_NAME_OR_PASSWORD => reason::v3::BAD_USER_NAME_OR_PASSWORD,
                reason::NOT_AUTHORIZED => reason::v3::NOT_AUTHORIZED,
                reason::SERVER_UNAVAILABLE | reason::SERVER_BUSY | reason::QUOTA_EXCEEDED => {
                    reason::v3::SERVER_UNAVAILABLE
                }
                // 3.x has no code for the rest; "not authorized" is the closest refusal.
                _ => reason::v3::NOT_AUTHORIZED,
            }
        };
        out.push(Action::send(
            conn,
            Packet::ConnAck(ConnAck {
                code,
                ..ConnAck::default()
            }),
        ));
        out.push(Action::Close(conn, CloseReason::ConnectRefused));
    }

    fn create_session(&mut self, client_id: ByteStr, version: ProtocolVersion) -> SessionId {
        let sid = self.next_session;
        self.next_session += 1;
        self.insert_session(sid, Session::new(client_id.clone(), version));
        self.client_ids.insert(client_id, sid);
        sid
    }

    /// Clean start on an existing session: it ends, which sends a pending delayed will.
    fn discard_session_for_clean_start(
        &mut self,
        sid: SessionId,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.end_session(sid, now, out);
    }
}
