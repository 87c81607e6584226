pub mod frame_guard;
pub mod outbox;
pub mod websocket;
