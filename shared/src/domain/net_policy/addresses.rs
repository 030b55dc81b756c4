//! Address classification: which IP addresses are globally routable unicast, and which no
//! receiver can listen on at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A globally routable unicast address (the IANA special-purpose registries, read strictly).
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network"; 0.0.0.0 reaches the local host on Linux
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d) and the NAT64 well-known prefix (64:ff9b::a.b.c.d) reach the
    // embedded IPv4 address: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_global_v4(embedded_v4(ip));
    }
    // Only 2000::/3 is allocated for global unicast; everything else (::, ::1, IPv4-compatible
    // ::a.b.c.d, fc00::/7, fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48, 100::/64 ...) is not.
    if segments[0] & 0xe000 != 0x2000 {
        return false;
    }
    let refused = match segments[0] {
        0x2001 => segments[1] < 0x200 || segments[1] == 0xdb8, // IETF assignments, Teredo; documentation
        0x2002 => true, // 6to4 (deprecated; embeds any IPv4 address)
        first => first & 0xfff0 == 0x3ff0, // documentation (3fff::/20)
    };
    !refused
}

fn embedded_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// Addresses no receiver can listen on, refused even when private targets are allowed.
pub(super) fn is_never_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_never_unicast(IpAddr::V4(v4)),
            None => v6.is_unspecified() || v6.is_multicast(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::net_policy::TargetPolicy;

    const STRICT: TargetPolicy = TargetPolicy::PUBLIC_ONLY;

    #[test]
    fn raw_addresses_in_forbidden_ranges_are_refused_and_public_ones_permitted() {
        for raw in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.169.254",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "198.18.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "fd12:3456::1",
            "fe80::1%1",
        ] {
            let Ok(ip) = raw.split('%').next().unwrap_or(raw).parse::<IpAddr>() else {
                panic!("{raw} does not parse");
            };
            assert!(!STRICT.permits(ip), "{raw}");
        }
        for raw in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700:4700::1111",
            "2a00:1450:4007:80e::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let ip: IpAddr = raw.parse().expect("address");
            assert!(STRICT.permits(ip), "{raw}");
        }
    }
}
