pub mod request;
pub mod systemd;
