//! Root hints in the standard `named.root` format.
//!
//! ```text
//! ; comment
//! .                        3600000      NS    A.ROOT-SERVERS.NET.
//! A.ROOT-SERVERS.NET.      3600000      A     198.41.0.4
//! A.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:ba3e::2:30
//! ```
//!
//! The TTL and the class (`IN`) are optional. Only NS records for the root and
//! A/AAAA records for the names they list are used; anything else is an
//! error, so a typo in a private hints file is reported instead of ignored.
//! [`RootHints::builtin`] holds the real root servers (for users); every
//! test, benchmark and demo passes its own file instead.

use hickory_proto::rr::Name;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// One root server: its name and addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HintServer {
    pub name: Name,
    pub addrs: Vec<IpAddr>,
}

/// The root servers to start iteration from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootHints {
    pub servers: Vec<HintServer>,
}

/// A parse error, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintsError {
    pub line: usize,
    pub msg: String,
}

impl fmt::Display for HintsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "root hints line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for HintsError {}

/// The IANA root servers (named.root as of 2024: b.root-servers.net renumbered in 2023).
pub const BUILTIN_NAMED_ROOT: &str = "\
.                        3600000      NS    A.ROOT-SERVERS.NET.
A.ROOT-SERVERS.NET.      3600000      A     198.41.0.4
A.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:ba3e::2:30
.                        3600000      NS    B.ROOT-SERVERS.NET.
B.ROOT-SERVERS.NET.      3600000      A     170.247.170.2
B.ROOT-SERVERS.NET.      3600000      AAAA  2801:1b8:10::b
.                        3600000      NS    C.ROOT-SERVERS.NET.
C.ROOT-SERVERS.NET.      3600000      A     192.33.4.12
C.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2::c
.                        3600000      NS    D.ROOT-SERVERS.NET.
D.ROOT-SERVERS.NET.      3600000      A     199.7.91.13
D.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2d::d
.                        3600000      NS    E.ROOT-SERVERS.NET.
E.ROOT-SERVERS.NET.      3600000      A     192.203.230.10
E.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:a8::e
.                        3600000      NS    F.ROOT-SERVERS.NET.
F.ROOT-SERVERS.NET.      3600000      A     192.5.5.241
F.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:2f::f
.                        3600000      NS    G.ROOT-SERVERS.NET.
G.ROOT-SERVERS.NET.      3600000      A     192.112.36.4
G.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:12::d0d
.                        3600000      NS    H.ROOT-SERVERS.NET.
H.ROOT-SERVERS.NET.      3600000      A     198.97.190.53
H.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:1::53
.                        3600000      NS    I.ROOT-SERVERS.NET.
I.ROOT-SERVERS.NET.      3600000      A     192.36.148.17
I.ROOT-SERVERS.NET.      3600000      AAAA  2001:7fe::53
.                        3600000      NS    J.ROOT-SERVERS.NET.
J.ROOT-SERVERS.NET.      3600000      A     192.58.128.30
J.ROOT-SERVERS.NET.      3600000      AAAA  2001:503:c27::2:30
.                        3600000      NS    K.ROOT-SERVERS.NET.
K.ROOT-SERVERS.NET.      3600000      A     193.0.14.129
K.ROOT-SERVERS.NET.      3600000      AAAA  2001:7fd::1
.                        3600000      NS    L.ROOT-SERVERS.NET.
L.ROOT-SERVERS.NET.      3600000      A     199.7.83.42
L.ROOT-SERVERS.NET.      3600000      AAAA  2001:500:9f::42
.                        3600000      NS    M.ROOT-SERVERS.NET.
M.ROOT-SERVERS.NET.      3600000      A     202.12.27.33
M.ROOT-SERVERS.NET.      3600000      AAAA  2001:dc3::35
";

impl RootHints {
    /// The real root servers. Never used by tests.
    pub fn builtin() -> RootHints {
        RootHints::parse(BUILTIN_NAMED_ROOT).expect("built-in root hints parse")
    }

    /// Read a named.root-format file.
    pub fn from_file(path: &std::path::Path) -> Result<RootHints, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read root hints {}: {e}", path.display()))?;
        RootHints::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parse named.root text. At least one root NS with an IPv4 or IPv6
    /// address is required.
    pub fn parse(text: &str) -> Result<RootHints, HintsError> {
        let mut ns_names: Vec<Name> = Vec::new();
        let mut addrs: Vec<(Name, IpAddr)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |msg: String| HintsError { line, msg };
            let content = raw.split(';').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut toks: Vec<&str> = content.split_whitespace().collect();
            if toks.len() < 3 {
                return Err(err(format!(
                    "expected `OWNER [TTL] [IN] TYPE DATA`, got `{content}`"
                )));
            }
            let owner = Name::from_ascii(toks[0])
                .map_err(|e| err(format!("bad owner name `{}`: {e}", toks[0])))?;
            toks.remove(0);
            if toks[0].chars().all(|c| c.is_ascii_digit()) {
                toks.remove(0);
            }
            if toks.first().is_some_and(|t| t.eq_ignore_ascii_case("IN")) {
                toks.remove(0);
            }
            if toks.len() != 2 {
                return Err(err(format!(
                    "expected `TYPE DATA` after owner, got `{content}`"
                )));
            }
            let (ty, data) = (toks[0].to_ascii_uppercase(), toks[1]);
            match ty.as_str() {
                "NS" => {
                    if !owner.is_root() {
                        return Err(err(format!(
                            "NS record for `{owner}`; root hints list NS records for `.` only"
                        )));
                    }
                    let target = Name::from_ascii(data)
                        .map_err(|e| err(format!("bad NS name `{data}`: {e}")))?;
                    if !ns_names.contains(&target) {
                        ns_names.push(target);
                    }
                }
                "A" => {
                    let ip: Ipv4Addr = data
                        .parse()
                        .map_err(|e| err(format!("bad IPv4 address `{data}`: {e}")))?;
                    addrs.push((owner, IpAddr::V4(ip)));
                }
                "AAAA" => {
                    let ip: std::net::Ipv6Addr = data
                        .parse()
                        .map_err(|e| err(format!("bad IPv6 address `{data}`: {e}")))?;
                    addrs.push((owner, IpAddr::V6(ip)));
                }
                other => {
                    return Err(err(format!(
                        "unexpected record type `{other}` in root hints"
                    )))
                }
            }
        }
        let servers: Vec<HintServer> = ns_names
            .into_iter()
            .map(|name| HintServer {
                addrs: addrs
                    .iter()
                    .filter(|(n, _)| *n == name)
                    .map(|(_, a)| *a)
                    .collect(),
                name,
            })
            .filter(|s| !s.addrs.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(HintsError {
                line: text.lines().count(),
                msg: "no root server with an address (need `. NS name` and `name A addr`)".into(),
            });
        }
        Ok(RootHints { servers })
    }

    /// Every IPv4 address in the hints, in file order.
    pub fn ipv4_addrs(&self) -> Vec<Ipv4Addr> {
        self.servers
            .iter()
            .flat_map(|s| s.addrs.iter())
            .filter_map(|a| match a {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_named_root_format_with_comments_and_optional_fields() {
        let text = "; private root\n\
                    .   3600000 IN NS  ns.root.\n\
                    .          NS      alt.root. ; second\n\
                    ns.root.  3600000  A  127.0.0.2\n\
                    ns.root.  3600000  AAAA ::1\n\
                    alt.root. A 127.0.0.3\n";
        let h = RootHints::parse(text).unwrap();
        assert_eq!(h.servers.len(), 2);
        assert_eq!(h.servers[0].name, Name::from_ascii("ns.root.").unwrap());
        assert_eq!(h.servers[0].addrs.len(), 2);
        assert_eq!(
            h.ipv4_addrs(),
            vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)]
        );
    }

    #[test]
    fn builtin_hints_are_the_thirteen_real_roots() {
        let h = RootHints::builtin();
        assert_eq!(h.servers.len(), 13);
        assert!(h.ipv4_addrs().contains(&Ipv4Addr::new(198, 41, 0, 4)));
    }

    #[test]
    fn a_server_without_address_is_dropped_and_none_at_all_is_an_error() {
        let h = RootHints::parse(". NS a.root.\n. NS b.root.\nb.root. A 127.0.0.9\n").unwrap();
        assert_eq!(h.servers.len(), 1);
        let e = RootHints::parse(". NS a.root.\n").unwrap_err();
        assert!(e.msg.contains("no root server"), "{e}");
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        let e = RootHints::parse(". NS a.root.\na.root. A 300.1.1.1\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = RootHints::parse("example. NS a.root.\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = RootHints::parse(". MX 10 a.root.\n").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
