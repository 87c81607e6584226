//! TLS straight from the gateway: `wss://` and `https://` when `tls_cert`
//! and `tls_key` are set, with the certificate replaced without a restart.
//!
//! A deployment behind a load balancer can leave TLS to it (see the README);
//! one that exposes the gateway itself needs it here. The certificate is
//! served through a [`ResolvesServerCert`] that reads the current pair from
//! an [`ArcSwap`]: on SIGHUP, and when either file changes (their times and
//! sizes are looked at every [`POLL`]), the pair is loaded again and swapped
//! in, so new handshakes get the new certificate while open connections
//! keep the one they started with. Every worker's acceptor resolves through
//! the same swap, and the reload is logged only once it is done. A pair that cannot be used is reported
//! and the current one kept: a half-copied renewal never takes the gateway
//! off the air.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Settings;

/// How often the certificate and key files are looked at for a change.
const POLL: Duration = Duration::from_secs(2);

/// Why a certificate or its key cannot be used. Every message names the
/// file; none shows anything of the key.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read the TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid TLS {what} {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the TLS key {key} is not the key of the certificate {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
}

/// The rustls configuration the settings ask for: none without
/// `tls_cert`, else one serving the pair they name, reloaded as the module
/// docs say for as long as the configuration is in use. Must run inside
/// the gateway's actix `System`.
pub fn configure(settings: &Settings) -> Result<Option<ServerConfig>, CertError> {
    let Some((cert, key)) = settings.tls_files() else {
        return Ok(None);
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let pair = load(cert, key, &provider)?;
    announce(cert, &pair, None);
    let current = Arc::new(Current {
        pair: ArcSwap::from_pointee(pair),
        cert: cert.to_owned(),
        key: key.to_owned(),
        provider: provider.clone(),
    });
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    watch(Arc::downgrade(&current));
    Ok(Some(config))
}

/// The pair new handshakes are given.
#[derive(Debug)]
struct Current {
    pair: ArcSwap<CertifiedKey>,
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.load_full())
    }
}

impl Current {
    /// Loads the files again; keeps the current pair if they cannot be used.
    fn reload(&self, why: &str) {
        match load(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                // Swapped in before it is announced: whoever acts on the
                // line (an operator, a deploy script) must find every new
                // handshake, on every worker (they all resolve through
                // this one `Current`), already getting the new pair.
                let pair = Arc::new(pair);
                self.pair.store(pair.clone());
                announce(&self.cert, &pair, Some(why));
            }
            Err(e) => tracing::warn!(error = %e, "{why}: keeping the current TLS certificate"),
        }
    }
}

/// Reloads `current` on SIGHUP and when its files change, until the
/// configuration it serves is dropped. SIGHUP is handled from this call on.
fn watch(current: Weak<Current>) {
    #[cfg(unix)]
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok();
    let Some(files) = current.upgrade().map(|c| (c.cert.clone(), c.key.clone())) else {
        return;
    };
    actix_web::rt::spawn(async move {
        let mut seen = stamps(&files);
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match &mut sighup {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            let why = tokio::select! {
                _ = hangup => "SIGHUP received",
                _ = tick.tick() => {
                    let now = stamps(&files);
                    if now == seen {
                        if current.strong_count() == 0 {
                            return;
                        }
                        continue;
                    }
                    seen = now;
                    "TLS files changed"
                }
            };
            let Some(current) = current.upgrade() else {
                return;
            };
            current.reload(why);
        }
    });
}

/// What tells a file's change: its modification time and size (a file
/// replaced by a rename is a change too). None while it is missing.
type Stamp = Option<(SystemTime, u64)>;

fn stamps((cert, key): &(PathBuf, PathBuf)) -> (Stamp, Stamp) {
    let stamp = |path: &Path| {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    (stamp(cert), stamp(key))
}

/// The certificate chain in `cert` with the private key in `key`, checked
/// to belong together.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, CertError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| CertError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let invalid = |what, path: &Path, reason: String| CertError::Invalid {
        what,
        path: path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&read("certificate", cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(
            "certificate",
            cert,
            "no certificate in it (a PEM block BEGIN CERTIFICATE)".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&read("key", key)?).map_err(|e| {
        let reason = match e {
            pem::Error::NoItemsFound => "no private key in it (a PEM block BEGIN PRIVATE KEY, \
                                         BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
                .to_owned(),
            // The parser's messages name positions and markers, never the
            // key's bytes.
            other => other.to_string(),
        };
        invalid("key", key, reason)
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| invalid("key", key, format!("not a key rustls can sign with ({e})")))?;
    let pair = CertifiedKey::new(chain, signing);
    match pair.keys_match() {
        // A key whose public half cannot be derived is taken on trust (as
        // rustls does); a handshake with the wrong one fails visibly.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(pair),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        Err(e) => Err(invalid(
            "certificate",
            cert,
            format!("its first certificate cannot be read ({e})"),
        )),
    }
}

/// Logs a loaded certificate: its file, subject and expiry, and `why` it
/// was loaded again.
fn announce(path: &Path, pair: &CertifiedKey, why: Option<&str>) {
    let (subject, expires) = pair
        .cert
        .first()
        .and_then(|leaf| describe(leaf))
        .unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let cert = path.display();
    match why {
        None => tracing::info!(%cert, %subject, %expires, "TLS certificate loaded"),
        Some(why) => tracing::info!(%cert, %subject, %expires, "{why}: TLS certificate loaded"),
    }
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// The object identifier of an X.509 common name (2.5.4.3), DER-encoded.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// A certificate's subject (its common name) and the end of its validity,
/// for the log: the few DER fields needed, read here rather than with an
/// X.509 crate (rustls parses certificates only to verify them). None if
/// the certificate is not laid out as X.509 says.
fn describe(cert: &[u8]) -> Option<(String, String)> {
    let (_, cert) = Elements(cert).next().filter(|e| e.0 == SEQUENCE)?;
    let (_, tbs) = Elements(cert).next().filter(|e| e.0 == SEQUENCE)?;
    let mut fields = Elements(tbs);
    if fields.next()?.0 == VERSION {
        // That was the version; the serial number follows.
        fields.next()?;
    }
    let _signature = fields.next()?;
    let _issuer = fields.next()?;
    let (_, validity) = fields.next().filter(|e| e.0 == SEQUENCE)?;
    let (_, subject) = fields.next().filter(|e| e.0 == SEQUENCE)?;
    let not_after = Elements(validity).nth(1)?;
    Some((common_name(subject)?, time(not_after)?))
}

/// The common name in a distinguished name.
fn common_name(name: &[u8]) -> Option<String> {
    Elements(name)
        .flat_map(|(_, set)| Elements(set))
        .find_map(|(_, attribute)| {
            let mut parts = Elements(attribute);
            let (_, oid) = parts.next()?;
            let (_, value) = parts.next()?;
            (oid == COMMON_NAME).then(|| String::from_utf8_lossy(value).into_owned())
        })
}

/// An X.509 time (`YYMMDDHHMMSSZ` or `YYYYMMDDHHMMSSZ`) as
/// `YYYY-MM-DD HH:MM:SS UTC`.
fn time((tag, text): (u8, &[u8])) -> Option<String> {
    let text = match tag {
        // RFC 5280: two-digit years 50 to 99 are 19xx.
        UTC_TIME => [if text.first()? >= &b'5' { b"19" } else { b"20" }, text].concat(),
        GENERALIZED_TIME => text.to_vec(),
        _ => return None,
    };
    let (digits, zone) = text.split_at_checked(14)?;
    if zone != b"Z" || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let digits = std::str::from_utf8(digits).ok()?;
    let part = |range: std::ops::Range<usize>| &digits[range];
    Some(format!(
        "{}-{}-{} {}:{}:{} UTC",
        part(0..4),
        part(4..6),
        part(6..8),
        part(8..10),
        part(10..12),
        part(12..14)
    ))
}

/// The DER elements one after another in `.0`, as (tag, contents); ends
/// early at one that is cut short.
struct Elements<'a>(&'a [u8]);

impl<'a> Iterator for Elements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (len, rest) = rest.split_at_checked(n)?;
            let len = len.iter().fold(0, |len, &b| len << 8 | usize::from(b));
            (len, rest)
        };
        let (contents, rest) = rest.split_at_checked(len)?;
        self.0 = rest;
        Some((tag, contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_described_by_its_common_name_and_expiry() {
        let key = rcgen::KeyPair::generate().expect("key");
        let issue = |(year, month, day)| {
            let mut params =
                rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "gateway.test");
            params.not_after = rcgen::date_time_ymd(year, month, day);
            params.self_signed(&key).expect("cert")
        };
        // Before 2050 X.509 writes a two-digit year, from 2050 on four.
        assert_eq!(
            describe(issue((2049, 12, 31)).der()),
            Some(("gateway.test".into(), "2049-12-31 00:00:00 UTC".into()))
        );
        assert_eq!(
            describe(issue((2051, 1, 2)).der()),
            Some(("gateway.test".into(), "2051-01-02 00:00:00 UTC".into()))
        );
    }

    #[test]
    fn what_is_not_a_certificate_is_not_described() {
        assert_eq!(describe(b""), None);
        assert_eq!(describe(&[0x30, 0x82, 0xff]), None);
        assert_eq!(describe(&[0x30, 0x03, 0x30, 0x01, 0x00]), None);
        assert_eq!(time((UTC_TIME, b"49123100000")), None);
        assert_eq!(time((UTC_TIME, b"4912310000\xc3\xa9Z")), None);
        assert_eq!(
            time((UTC_TIME, b"991231235959Z")).as_deref(),
            Some("1999-12-31 23:59:59 UTC")
        );
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (cert_path, key_path) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        (cert_path, key_path)
    }

    #[test]
    fn a_pair_that_cannot_be_used_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let provider = rustls::crypto::ring::default_provider();
        let (cert, key) = write_pair(dir.path(), "a");
        let (_, other_key) = write_pair(dir.path(), "b");
        load(&cert, &key, &provider).expect("a good pair loads");

        let missing = dir.path().join("missing.pem");
        let err = load(&missing, &key, &provider).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read the TLS certificate {}: ",
                missing.display()
            )),
            "{err}"
        );
        let err = load(&cert, &missing, &provider).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read the TLS key {}: ", missing.display())),
            "{err}"
        );
        let err = load(&key, &key, &provider).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "invalid TLS certificate {}: no certificate in it (a PEM block BEGIN CERTIFICATE)",
                key.display()
            )
        );
        let err = load(&cert, &cert, &provider).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "invalid TLS key {}: no private key",
                cert.display()
            )),
            "{err}"
        );
        let err = load(&cert, &other_key, &provider).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the TLS key {} is not the key of the certificate {}",
                other_key.display(),
                cert.display()
            )
        );
        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let err = load(&garbled, &key, &provider).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("invalid TLS certificate {}: ", garbled.display())),
            "{err}"
        );
    }
}
