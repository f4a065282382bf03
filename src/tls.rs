//! TLS for the application layer: rustls (ring provider) configuration,
//! a private certificate authority kept on disk, and connection info.
//!
//! Everything here is generic over `Read + Write` streams: the same
//! [`rustls::StreamOwned`] wraps a `std::net::TcpStream` or the stack's
//! [`crate::runtime::TcpStream`].
//!
//! # Certificates
//!
//! [`CertStore::load_or_create`] keeps four PEM files in a state directory
//! (default [`default_state_dir`]):
//!
//! | file | content | mode |
//! | --- | --- | --- |
//! | `ca.pem` | the private CA certificate: give it to clients (`curl --cacert`) | 0644 |
//! | `ca-key.pem` | the CA's private key (PKCS#8) | 0600 |
//! | `server.pem` | the server certificate (IP SAN = the stack's address, DNS SAN = its name), then the CA | 0644 |
//! | `server-key.pem` | the server's private key | 0600 |
//!
//! On the first start all four are created. On later starts the CA is
//! reused; the server certificate is reused if it still chains to the CA, is
//! valid now, and names both the requested address and name, and is
//! re-issued otherwise. Users who have their own certificate skip the store
//! and call [`load_certs`] / [`load_private_key`] and [`server_config`].
//!
//! Mutual TLS: [`ServerTls::client_ca`] makes the server demand a client
//! certificate signed by the given roots (rustls' `WebPkiClientVerifier`), and
//! [`ClientTls::client_cert`] makes the client present one.
//! [`CertStore::issue_client_cert`] issues such a certificate from the CA.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, CommonState, HandshakeKind, ProtocolVersion, RootCertStore, ServerConfig,
    SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::fs;
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol id for HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The crypto provider used everywhere: rustls' `ring` backend.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> io::Error + '_ {
    move |e| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// The default directory for certificates and keys:
/// `$XDG_STATE_HOME/tunstack`, else `~/.local/state/tunstack`, and
/// `/var/lib/tunstack` when running as root (uid 0).
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    state_dir_from(
        root,
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

fn state_dir_from(root: bool, xdg: Option<PathBuf>, home: Option<PathBuf>) -> PathBuf {
    if root {
        return PathBuf::from("/var/lib/tunstack");
    }
    if let Some(x) = xdg.filter(|p| p.is_absolute()) {
        return x.join("tunstack");
    }
    match home {
        Some(h) => h.join(".local/state/tunstack"),
        None => PathBuf::from("/var/lib/tunstack"),
    }
}

/// Read every certificate from a PEM file.
pub fn load_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = fs::read(path)?;
    parse_certs(&pem).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Parse every certificate from PEM text (error if there is none).
pub fn parse_certs(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(invalid("bad certificate PEM"))?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no certificate in PEM",
        ));
    }
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_private_key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    let pem = fs::read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// A root store holding the certificates of a PEM file (a CA bundle).
pub fn load_roots(path: &Path) -> io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(tls_err)?;
    }
    Ok(roots)
}

/// Mozilla's root certificates (compiled in by `webpki-roots`).
pub fn webpki_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// Write `data` to `path` atomically (temp file + rename) with `mode`.
fn write_file(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// A certificate chain and its private key, in PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The leaf certificate followed by the CA certificate.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
}

impl IssuedCert {
    pub fn chain(&self) -> io::Result<Vec<CertificateDer<'static>>> {
        parse_certs(self.chain_pem.as_bytes())
    }

    pub fn key(&self) -> io::Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(invalid("bad key PEM"))
    }

    /// Write the chain and key (key with mode 0600) to two files.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> io::Result<()> {
        write_file(key_path, self.key_pem.as_bytes(), 0o600)?;
        write_file(cert_path, self.chain_pem.as_bytes(), 0o644)
    }
}

/// A private CA and the server certificate it issued, kept in a directory.
pub struct CertStore {
    dir: PathBuf,
    ca_pem: String,
    ca_key_pem: String,
    ca_der: CertificateDer<'static>,
    server: IssuedCert,
    /// True when this call created a new CA.
    pub created_ca: bool,
    /// True when this call issued a new server certificate.
    pub issued_server: bool,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("dir", &self.dir)
            .field("created_ca", &self.created_ca)
            .field("issued_server", &self.issued_server)
            .finish()
    }
}

const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const SERVER_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";

impl CertStore {
    /// Load the CA and server certificate from `dir`, creating whatever is
    /// missing (the directory too, mode 0700). The server certificate names
    /// `addr` (IP SAN) and `name` (DNS SAN, e.g. `tunstack.local`); it is
    /// re-issued when it does not, when it no longer chains to the CA, or
    /// when it has expired.
    pub fn load_or_create(dir: &Path, addr: IpAddr, name: &str) -> io::Result<CertStore> {
        ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}")))?;
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let ca_path = dir.join(CA_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        let mut created_ca = false;
        let (ca_pem, ca_key_pem) = if ca_path.exists() && ca_key_path.exists() {
            (
                fs::read_to_string(&ca_path)?,
                fs::read_to_string(&ca_key_path)?,
            )
        } else {
            let (pem, key) = new_ca()?;
            write_file(&ca_key_path, key.as_bytes(), 0o600)?;
            write_file(&ca_path, pem.as_bytes(), 0o644)?;
            created_ca = true;
            (pem, key)
        };
        let ca_der = parse_certs(ca_pem.as_bytes())?.remove(0);
        let mut store = CertStore {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_key_pem,
            ca_der,
            server: IssuedCert {
                chain_pem: String::new(),
                key_pem: String::new(),
            },
            created_ca,
            issued_server: false,
        };
        // Fail early if the CA key does not load or match.
        store.issuer()?;
        let srv_path = dir.join(SERVER_FILE);
        let srv_key_path = dir.join(SERVER_KEY_FILE);
        let existing = match (
            fs::read_to_string(&srv_path),
            fs::read_to_string(&srv_key_path),
        ) {
            (Ok(c), Ok(k)) if !created_ca => Some(IssuedCert {
                chain_pem: c,
                key_pem: k,
            }),
            _ => None,
        };
        match existing {
            Some(s) if store.server_cert_ok(&s, addr, name) => store.server = s,
            _ => {
                let s = store.issue(name, &[addr], &[name], true, false)?;
                s.write(&srv_path, &srv_key_path)?;
                store.server = s;
                store.issued_server = true;
            }
        }
        Ok(store)
    }

    fn server_cert_ok(&self, s: &IssuedCert, addr: IpAddr, name: &str) -> bool {
        let (Ok(chain), Ok(_key)) = (s.chain(), s.key()) else {
            return false;
        };
        let mut roots = RootCertStore::empty();
        if roots.add(self.ca_der.clone()).is_err() {
            return false;
        }
        let Ok(verifier) =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()
        else {
            return false;
        };
        let now = UnixTime::now();
        let names = [
            ServerName::IpAddress(addr.into()),
            match ServerName::try_from(name.to_string()) {
                Ok(n) => n,
                Err(_) => return false,
            },
        ];
        names.iter().all(|n| {
            verifier
                .verify_server_cert(&chain[0], &chain[1..], n, &[], now)
                .is_ok()
        })
    }

    fn issuer(&self) -> io::Result<Issuer<'static, KeyPair>> {
        let key = KeyPair::from_pem(&self.ca_key_pem).map_err(invalid("CA key"))?;
        Issuer::from_ca_cert_pem(&self.ca_pem, key).map_err(invalid("CA certificate"))
    }

    /// Issue a certificate from the CA. `server` adds the serverAuth
    /// extended key usage, `client` clientAuth (both may be set, e.g. for a
    /// cluster node that is server and client).
    pub fn issue(
        &self,
        common_name: &str,
        ips: &[IpAddr],
        dns_names: &[&str],
        server: bool,
        client: bool,
    ) -> io::Result<IssuedCert> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "tunstack");
        params.distinguished_name = dn;
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        for n in dns_names {
            let n = (*n).try_into().map_err(invalid("DNS name"))?;
            params.subject_alt_names.push(SanType::DnsName(n));
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        // Back-date a day to tolerate clock skew between hosts.
        let now = time_now();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let key = KeyPair::generate().map_err(invalid("key generation"))?;
        let issuer = self.issuer()?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(invalid("certificate signing"))?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issue a client certificate (clientAuth) for mutual TLS.
    pub fn issue_client_cert(&self, common_name: &str) -> io::Result<IssuedCert> {
        self.issue(common_name, &[], &[], false, true)
    }

    /// Issue a node certificate usable both as server and as client
    /// (for peers that connect to each other with mutual TLS).
    pub fn issue_node_cert(&self, ip: IpAddr, dns_name: &str) -> io::Result<IssuedCert> {
        self.issue(dns_name, &[ip], &[dns_name], true, true)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the CA certificate (what clients need to trust the server).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join(CA_FILE)
    }

    pub fn server_cert_path(&self) -> PathBuf {
        self.dir.join(SERVER_FILE)
    }

    pub fn server_key_path(&self) -> PathBuf {
        self.dir.join(SERVER_KEY_FILE)
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// A root store containing only this CA.
    pub fn roots(&self) -> RootCertStore {
        let mut r = RootCertStore::empty();
        r.add(self.ca_der.clone())
            .expect("CA certificate was parsed and verified at load");
        r
    }

    /// The server certificate chain and key.
    pub fn server_cert(&self) -> &IssuedCert {
        &self.server
    }
}

/// Leaf certificates are valid for about two years (re-issued on expiry).
const LEAF_DAYS: i64 = 800;
/// The CA is valid for about twenty years.
const CA_DAYS: i64 = 7300;

fn time_now() -> time::OffsetDateTime {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// Create a CA: (certificate PEM, key PEM).
fn new_ca() -> io::Result<(String, String)> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "tunstack local CA");
    dn.push(DnType::OrganizationName, "tunstack");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time_now();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CA_DAYS);
    let key = KeyPair::generate().map_err(invalid("key generation"))?;
    let cert = params
        .self_signed(&key)
        .map_err(invalid("CA self-signing"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// TLS protocol versions to allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TlsVersions {
    /// TLS 1.3 and 1.2 (negotiates 1.3 when both sides can).
    #[default]
    Both,
    Tls12Only,
    Tls13Only,
}

impl TlsVersions {
    fn list(self) -> &'static [&'static SupportedProtocolVersion] {
        static BOTH: [&SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static V12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        static V13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersions::Both => &BOTH,
            TlsVersions::Tls12Only => &V12,
            TlsVersions::Tls13Only => &V13,
        }
    }
}

/// Options for a TLS server.
pub struct ServerTls {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub versions: TlsVersions,
    /// ALPN protocols offered, in preference order (default: `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// Mutual TLS: demand a client certificate that chains to these roots.
    pub client_ca: Option<RootCertStore>,
}

impl ServerTls {
    pub fn new(cert_chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> ServerTls {
        ServerTls {
            cert_chain,
            key,
            versions: TlsVersions::Both,
            alpn: vec![ALPN_HTTP11.to_vec()],
            client_ca: None,
        }
    }

    /// The store's server certificate.
    pub fn from_store(store: &CertStore) -> io::Result<ServerTls> {
        Ok(ServerTls::new(store.server.chain()?, store.server.key()?))
    }

    /// Build the rustls configuration (share the `Arc` between connections:
    /// it holds the session cache for resumption).
    pub fn build(self) -> io::Result<Arc<ServerConfig>> {
        server_config(self)
    }
}

/// Build a server configuration: the given versions, ALPN, a 1024-entry
/// session cache and TLS 1.3 tickets for resumption, and a client
/// certificate verifier when `client_ca` is set.
pub fn server_config(opts: ServerTls) -> io::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(opts.versions.list())
        .map_err(tls_err)?;
    let builder = match opts.client_ca {
        Some(roots) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(opts.cert_chain, opts.key)
        .map_err(tls_err)?;
    cfg.alpn_protocols = opts.alpn;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    Ok(Arc::new(cfg))
}

/// Which certificates a client trusts.
#[derive(Clone, Debug)]
pub enum Roots {
    /// Mozilla's roots compiled in (`webpki-roots`).
    WebPki,
    /// The certificates in a PEM file (e.g. the store's `ca.pem`).
    CaFile(PathBuf),
    /// A ready root store.
    Store(RootCertStore),
}

/// Options for a TLS client.
pub struct ClientTls {
    pub roots: Roots,
    pub versions: TlsVersions,
    /// ALPN protocols offered (default: `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// Mutual TLS: the certificate chain and key to present.
    pub client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl ClientTls {
    pub fn new(roots: Roots) -> ClientTls {
        ClientTls {
            roots,
            versions: TlsVersions::Both,
            alpn: vec![ALPN_HTTP11.to_vec()],
            client_cert: None,
        }
    }

    pub fn build(self) -> io::Result<Arc<ClientConfig>> {
        client_config(self)
    }
}

/// Build a client configuration. Keep and share the returned `Arc`: its
/// in-memory session store (rustls' default, 256 entries) is what makes
/// the second connection to a server resume.
pub fn client_config(opts: ClientTls) -> io::Result<Arc<ClientConfig>> {
    let roots = match opts.roots {
        Roots::WebPki => webpki_roots(),
        Roots::CaFile(p) => load_roots(&p)?,
        Roots::Store(s) => s,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(opts.versions.list())
        .map_err(tls_err)?
        .with_root_certificates(roots);
    let mut cfg = match opts.client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(tls_err)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = opts.alpn;
    Ok(Arc::new(cfg))
}

/// What a finished handshake negotiated, for logs and `-v` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: String,
    /// e.g. "TLS13_AES_256_GCM_SHA384".
    pub cipher_suite: String,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<String>,
    /// Subject of the peer's leaf certificate, if it sent one.
    pub peer_subject: Option<String>,
    /// Subject alternative names of the peer's leaf certificate.
    pub peer_sans: Vec<String>,
    /// True when the session was resumed (abbreviated handshake).
    pub resumed: bool,
}

impl std::fmt::Display for TlsInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} / {}, ALPN {}, {}",
            self.version,
            self.cipher_suite,
            self.alpn.as_deref().unwrap_or("none"),
            if self.resumed {
                "resumed"
            } else {
                "full handshake"
            }
        )?;
        if let Some(s) = &self.peer_subject {
            write!(f, ", peer subject \"{s}\"")?;
        }
        if !self.peer_sans.is_empty() {
            write!(f, ", SAN {}", self.peer_sans.join(", "))?;
        }
        Ok(())
    }
}

/// Describe a connection (client or server side) after its handshake.
pub fn connection_info(c: &CommonState) -> TlsInfo {
    let version = match c.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => String::new(),
    };
    let cipher_suite = c
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();
    let alpn = c
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let (peer_subject, peer_sans) = match c.peer_certificates().and_then(|p| p.first()) {
        Some(der) => describe_cert(der),
        None => (None, Vec::new()),
    };
    TlsInfo {
        version,
        cipher_suite,
        alpn,
        peer_subject,
        peer_sans,
        resumed: c.handshake_kind() == Some(HandshakeKind::Resumed),
    }
}

/// The subject and SANs of a DER certificate (None / empty if it does not parse).
pub fn describe_cert(der: &CertificateDer<'_>) -> (Option<String>, Vec<String>) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return (None, Vec::new());
    };
    let subject = Some(cert.subject().to_string());
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for n in &ext.value.general_names {
            match n {
                GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => sans.push(format!(
                        "IP:{}",
                        std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3])
                    )),
                    16 => {
                        let a: [u8; 16] = (*b).try_into().unwrap_or([0; 16]);
                        sans.push(format!("IP:{}", std::net::Ipv6Addr::from(a)))
                    }
                    _ => {}
                },
                _ => {}
            }
        }
    }
    (subject, sans)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::{ClientConnection, ServerConnection};
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tunstack-tls-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    const ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    /// Run a handshake between two in-memory connections; Err if either side fails.
    fn pump(c: &mut ClientConnection, s: &mut ServerConnection) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    fn connect(
        ccfg: &Arc<ClientConfig>,
        scfg: &Arc<ServerConfig>,
        name: &str,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let mut c = ClientConnection::new(
            ccfg.clone(),
            ServerName::try_from(name.to_string()).unwrap(),
        )?;
        let mut s = ServerConnection::new(scfg.clone())?;
        pump(&mut c, &mut s)?;
        Ok((c, s))
    }

    fn store(name: &str) -> CertStore {
        CertStore::load_or_create(&tmpdir(name), ADDR, "tunstack.local").unwrap()
    }

    fn client(store: &CertStore, versions: TlsVersions) -> Arc<ClientConfig> {
        let mut o = ClientTls::new(Roots::Store(store.roots()));
        o.versions = versions;
        o.build().unwrap()
    }

    #[test]
    fn first_start_creates_ca_and_server_files_with_private_keys_0600() {
        let st = store("create");
        assert!(st.created_ca && st.issued_server);
        for (f, mode) in [
            ("ca.pem", 0o644),
            ("ca-key.pem", 0o600),
            ("server.pem", 0o644),
            ("server-key.pem", 0o600),
        ] {
            let m = fs::metadata(st.dir().join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        assert_eq!(load_certs(&st.ca_path()).unwrap().len(), 1);
        assert_eq!(load_certs(&st.server_cert_path()).unwrap().len(), 2);
        load_private_key(&st.server_key_path()).unwrap();
    }

    #[test]
    fn second_start_reuses_ca_and_server_cert() {
        let d = tmpdir("reuse");
        let a = CertStore::load_or_create(&d, ADDR, "tunstack.local").unwrap();
        let b = CertStore::load_or_create(&d, ADDR, "tunstack.local").unwrap();
        assert!(!b.created_ca && !b.issued_server);
        assert_eq!(a.ca_pem(), b.ca_pem());
        assert_eq!(a.server_cert().chain_pem, b.server_cert().chain_pem);
    }

    #[test]
    fn server_cert_reissued_when_address_changes_but_ca_kept() {
        let d = tmpdir("readdr");
        let a = CertStore::load_or_create(&d, ADDR, "tunstack.local").unwrap();
        let other: IpAddr = "10.0.0.3".parse().unwrap();
        let b = CertStore::load_or_create(&d, other, "tunstack.local").unwrap();
        assert!(!b.created_ca && b.issued_server);
        assert_eq!(a.ca_pem(), b.ca_pem());
        let (_, sans) = describe_cert(&b.server_cert().chain().unwrap()[0]);
        assert!(sans.contains(&"IP:10.0.0.3".to_string()), "{sans:?}");
        assert!(sans.contains(&"DNS:tunstack.local".to_string()), "{sans:?}");
    }

    #[test]
    fn invalid_dns_name_is_refused() {
        assert!(CertStore::load_or_create(&tmpdir("badname"), ADDR, "bad name!").is_err());
    }

    #[test]
    fn server_cert_valid_for_ip_and_dns_name() {
        let st = store("names");
        let scfg = ServerTls::from_store(&st).unwrap().build().unwrap();
        let ccfg = client(&st, TlsVersions::Both);
        connect(&ccfg, &scfg, "tunstack.local").unwrap();
        connect(&ccfg, &scfg, "10.0.0.2").unwrap();
        assert!(connect(&ccfg, &scfg, "other.local").is_err());
    }

    #[test]
    fn versions_tls12_and_tls13_negotiate_with_alpn() {
        let st = store("versions");
        let scfg = ServerTls::from_store(&st).unwrap().build().unwrap();
        for (v, want) in [
            (TlsVersions::Tls13Only, "TLSv1.3"),
            (TlsVersions::Tls12Only, "TLSv1.2"),
        ] {
            let (c, s) = connect(&client(&st, v), &scfg, "tunstack.local").unwrap();
            let ci = connection_info(&c);
            assert_eq!(ci.version, want);
            assert_eq!(ci.alpn.as_deref(), Some("http/1.1"));
            assert_eq!(connection_info(&s).version, want);
            assert_eq!(
                ci.peer_subject.as_deref(),
                Some("CN=tunstack.local, O=tunstack")
            );
        }
    }

    #[test]
    fn second_connection_resumes_with_shared_client_config() {
        let st = store("resume");
        let scfg = ServerTls::from_store(&st).unwrap().build().unwrap();
        for v in [TlsVersions::Tls13Only, TlsVersions::Tls12Only] {
            let ccfg = client(&st, v);
            let (c1, _) = connect(&ccfg, &scfg, "tunstack.local").unwrap();
            assert!(!connection_info(&c1).resumed);
            let (c2, s2) = connect(&ccfg, &scfg, "tunstack.local").unwrap();
            assert!(connection_info(&c2).resumed, "{v:?}");
            assert_eq!(s2.handshake_kind(), Some(HandshakeKind::Resumed));
        }
    }

    fn mtls_server(st: &CertStore) -> Arc<ServerConfig> {
        let mut o = ServerTls::from_store(st).unwrap();
        o.client_ca = Some(st.roots());
        o.build().unwrap()
    }

    fn mtls_client(st: &CertStore, cert: Option<&IssuedCert>) -> Arc<ClientConfig> {
        let mut o = ClientTls::new(Roots::Store(st.roots()));
        o.client_cert = cert.map(|c| (c.chain().unwrap(), c.key().unwrap()));
        o.build().unwrap()
    }

    #[test]
    fn mtls_refuses_client_without_certificate() {
        let st = store("mtls-none");
        assert!(connect(&mtls_client(&st, None), &mtls_server(&st), "tunstack.local").is_err());
    }

    #[test]
    fn mtls_refuses_certificate_from_another_ca() {
        let st = store("mtls-other");
        let other = store("mtls-other-ca");
        let cert = other.issue_client_cert("intruder").unwrap();
        assert!(connect(
            &mtls_client(&st, Some(&cert)),
            &mtls_server(&st),
            "tunstack.local"
        )
        .is_err());
    }

    #[test]
    fn mtls_accepts_certificate_from_the_ca() {
        let st = store("mtls-ok");
        let cert = st.issue_client_cert("node-1").unwrap();
        let (_, s) = connect(
            &mtls_client(&st, Some(&cert)),
            &mtls_server(&st),
            "tunstack.local",
        )
        .unwrap();
        assert_eq!(
            connection_info(&s).peer_subject.as_deref(),
            Some("CN=node-1, O=tunstack")
        );
    }

    #[test]
    fn state_dir_root_uses_var_lib() {
        assert_eq!(
            state_dir_from(true, Some("/x".into()), Some("/home/u".into())),
            PathBuf::from("/var/lib/tunstack")
        );
    }

    #[test]
    fn state_dir_prefers_xdg_state_home() {
        assert_eq!(
            state_dir_from(false, Some("/x/state".into()), Some("/home/u".into())),
            PathBuf::from("/x/state/tunstack")
        );
        // Relative XDG paths are invalid per the spec and ignored.
        assert_eq!(
            state_dir_from(false, Some("rel".into()), Some("/home/u".into())),
            PathBuf::from("/home/u/.local/state/tunstack")
        );
    }
}
