//! TLS material: PEM pairs and the swappable serving certificate (`store`), certificate
//! generation (`generate`), and the pure plan of self-managed rotation (`rotation`). No
//! network I/O; the shells that apply it are `server::reload` and `server::autotls`.

pub mod generate;
pub mod rotation;
pub mod store;
