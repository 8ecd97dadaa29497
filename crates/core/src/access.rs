//! Who may connect, and what they may publish and subscribe to: the hooks the security layer
//! (`crates/auth`: password files, ACL files) plugs into. Without hooks everything is allowed.
//!
//! The core calls them at CONNECT (authentication), PUBLISH (write), SUBSCRIBE (read on the
//! filter), and before sending a message to a subscriber (read on the topic, so a filter
//! granted with wildcards cannot leak topics the ACL denies), for retained messages too.

use std::net::SocketAddr;

/// What the broker knows about a connection, for authentication and ACL patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientInfo {
    pub client_id: String,
    pub username: Option<String>,
    /// The client's address (the real one, behind a PROXY-protocol load balancer).
    pub peer: Option<SocketAddr>,
    /// Index of the listener the connection came in on.
    pub listener: usize,
    /// Subject CN of a verified client certificate, if any.
    pub cert_cn: Option<String>,
}

/// The outcome of an authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthDecision {
    Allow,
    /// Wrong user name or password: CONNACK 0x86 (v5) / 0x04 (3.x).
    BadCredentials,
    /// Not allowed to connect: CONNACK 0x87 (v5) / 0x05 (3.x).
    NotAuthorized,
}

/// Authentication and authorisation decisions.
pub trait AccessControl: Send {
    /// Checks a CONNECT's credentials. `info.username` is the one the client sent (or the
    /// certificate CN when the listener takes the user name from the certificate).
    fn authenticate(&self, info: &ClientInfo, password: Option<&[u8]>) -> AuthDecision;
    /// May this client publish to `topic` (also checked for the will topic at CONNECT)?
    fn can_publish(&self, info: &ClientInfo, topic: &str) -> bool;
    /// May this client subscribe to `filter`?
    fn can_subscribe(&self, info: &ClientInfo, filter: &str) -> bool;
    /// May this client receive a message published on `topic`?
    fn can_receive(&self, info: &ClientInfo, topic: &str) -> bool;
    /// Whether `can_receive` can ever say no (lets the core skip the per-delivery check).
    fn restricts_reading(&self) -> bool {
        true
    }
}
