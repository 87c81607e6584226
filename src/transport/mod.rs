pub mod frame_guard;
pub mod linger;
pub mod outbox;
pub mod socket;
pub mod websocket;
