//! Why the gateway could not start.
//!
//! A type of its own rather than `std::io::Error`, so that every message
//! names what it is about (the address, the folder, the URL) and the
//! `concierge` command can tell a wrong setting from something the settings
//! name that cannot be used here and now, each with its exit status.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::CertError;
use crate::cluster::ClusterError;
use crate::config::ConfigError;

/// A failure of [`super::Gateway::start`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The settings are not ones the gateway can run with; nothing was
    /// touched.
    #[error(transparent)]
    Settings(#[from] ConfigError),
    /// The address is in use, not one of this machine's, or not permitted.
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    /// The TLS certificate or key cannot be read or used; nothing was
    /// touched.
    #[error(transparent)]
    Tls(#[from] CertError),
    /// The files folder under `data_dir` cannot be created or cleared.
    #[error("cannot prepare the data folder {path}: {source}")]
    DataFolder { path: PathBuf, source: io::Error },
    /// The cluster the settings name cannot be joined (its URL is
    /// refused, its state cannot be opened); the message says which.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}
