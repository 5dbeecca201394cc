//! The names a client certificate is known by: its DNS subject-alternative names, then its
//! subject's common name (CN). The certificate has been verified against `--tls-client-ca` by
//! then; this only reads it.
//!
//! webpki (which rustls verifies with) reads the DNS names; it does not expose the CN, so a
//! small DER reader finds it in the subject, which webpki hands over as bytes.

use tokio_rustls::rustls::pki_types::CertificateDer;

/// DER tags read here.
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;
/// id-at-commonName, 2.5.4.3, as DER content bytes.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
/// Longest DER length field read (4 bytes: up to 4 GiB, beyond any certificate).
const MAX_LENGTH_BYTES: usize = 4;

/// The certificate's DNS names, then its CN if it has one; empty when it cannot be parsed.
pub fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok(parsed) = webpki::EndEntityCert::try_from(certificate) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed.valid_dns_names().map(str::to_string).collect();
    if let Some(common_name) = common_name(parsed.subject())
        && !names.contains(&common_name)
    {
        names.push(common_name);
    }
    names
}

/// The first CN of a subject (the content of its Name SEQUENCE: RDN SETs of
/// SEQUENCE { OID, value }).
fn common_name(mut subject: &[u8]) -> Option<String> {
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = read_tlv(subject)?;
        subject = rest;
        if tag != TAG_SET {
            return None;
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = read_tlv(rdn)?;
            rdn = rest;
            if tag != TAG_SEQUENCE {
                return None;
            }
            let (tag, oid, value) = read_tlv(attribute)?;
            if tag != TAG_OID || oid != OID_COMMON_NAME {
                continue;
            }
            let (tag, text, _) = read_tlv(value)?;
            return match tag {
                TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING => {
                    String::from_utf8(text.to_vec()).ok()
                }
                _ => None,
            };
        }
    }
    None
}

/// One DER element: (tag, content, what follows). `None` for anything malformed or cut short.
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags: none of the elements read here has one
    }
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > MAX_LENGTH_BYTES || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let length = bytes
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (content, rest) = rest.split_at(length);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(params: rcgen::CertificateParams) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().clone()
    }

    #[test]
    fn dns_names_come_first_then_the_common_name() {
        let mut params =
            rcgen::CertificateParams::new(vec!["worker.example.com".into(), "w2".into()])
                .expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Spool");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders-worker");
        assert_eq!(
            certificate_names(&certificate(params)),
            ["worker.example.com", "w2", "orders-worker"]
        );
    }

    #[test]
    fn a_certificate_without_dns_names_is_known_by_its_common_name() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "billing");
        assert_eq!(certificate_names(&certificate(params)), ["billing"]);
    }

    #[test]
    fn garbage_has_no_names_and_does_not_panic() {
        assert!(certificate_names(&CertificateDer::from(vec![0x30, 0x82, 0xff])).is_empty());
        for input in [
            &[][..],
            &[0x31],
            &[0x31, 0x85, 1, 2, 3, 4, 5],
            &[0x31, 0x05, 0x30],
            &[0x1f, 0x01, 0x00],
            &[0x31, 0x03, 0x30, 0x01, 0x06],
        ] {
            assert_eq!(common_name(input), None, "{input:?}");
        }
    }
}
