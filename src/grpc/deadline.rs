//! The client's deadline of a call, from its `grpc-timeout` header. tonic bounds a unary
//! handler by it, but not a response stream, so a long poll reads it itself.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// Ends a long poll this long before the client's deadline, so the client sees an OK stream
/// rather than DEADLINE_EXCEEDED; halved for very short deadlines.
const DEADLINE_MARGIN: Duration = Duration::from_millis(100);

/// How long the server may keep the call open: the client's timeout less a safety margin.
pub fn client_budget(metadata: &MetadataMap) -> Option<Duration> {
    let timeout = parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    let margin = DEADLINE_MARGIN.min(timeout / 2);
    Some(timeout - margin)
}

/// Parses the gRPC wire format: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3_600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3_600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "S", "5", "5x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn keeps_a_margin() {
        let mut metadata = MetadataMap::new();
        metadata.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(client_budget(&metadata), Some(Duration::from_millis(1_900)));
        metadata.insert("grpc-timeout", "100m".parse().unwrap());
        assert_eq!(client_budget(&metadata), Some(Duration::from_millis(50)));
    }
}
