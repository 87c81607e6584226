//! The file server's side of the wire (`/fs`, an HTTP API beside the
//! WebSocket): the header its key travels in, the form of the multipart
//! uploads seed 004's clients send, and the JSON bodies it answers with.
//! Kept here with the payloads so that the gateway and the clients written
//! in Rust (the tests among them) read and write the same names.

use serde::{Deserialize, Serialize};

/// The header seed 004's clients send their key in (`Authorization` works
/// too).
pub const FS_KEY_HEADER: &str = "x-fs-key";

/// The most files one multipart `POST` to `/fs/<name>/` may carry: each is
/// received into a file of its own until the request ends.
pub const MAX_FILES_PER_POST: usize = 64;

/// A stored upload (`201`): its size in bytes. The answer to a `PUT`, and
/// to a multipart `POST` of one file to `/fs/<name>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub size: u64,
}

/// The files a multipart `POST` to `/fs/<name>/` stored (`201`), in the
/// order of their first part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFiles {
    pub files: Vec<StoredFile>,
}

/// One file of [`StoredFiles`]: the name it was stored under (the part's
/// filename, sanitized) and its size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
}

/// A deleted file or folder (`200`): its path under the client's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
}

/// A refused file request, whatever its status: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileError {
    pub error: String,
}
