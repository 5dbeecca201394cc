//! SQS message attributes (String, Number, Binary, with custom type labels) kept in Spool's
//! string map of message attributes, and their MD5 as SQS computes it.
//!
//! The mapping is reversible and readable by every other API:
//! - an attribute `name` is the map entry `name`; its value is the StringValue (String and
//!   Number types) or the base64 of the BinaryValue (Binary types), which is what SQS's JSON
//!   protocol carries for blobs anyway;
//! - types other than plain `String` are listed in one reserved entry, [`TYPES_KEY`]:
//!   `name=DataType,name2=DataType2` (SQS names and types have no `=` or `,`).
//!
//! So a gRPC or CMQ consumer sees `name → value`, and an attribute sent over gRPC reads as a
//! String attribute over SQS. Spool's limits apply to the map (16 entries, keys of 1..64
//! characters of letters, digits, `-`, `_`, `.`): SQS's 10 attributes and the types entry fit;
//! SQS names longer than 64 characters are refused.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use md5::{Digest as _, Md5};
use serde_json::{Map, Value, json};

use super::hex;
use super::sqs::SqsError;

/// The reserved entry listing the types that are not plain `String`.
pub const TYPES_KEY: &str = "sqs.types";
/// Attributes of one SQS message at most (SQS's limit).
pub const MAX_SQS_ATTRIBUTES: usize = 10;
/// Characters of an attribute name at most (Spool's key length, shorter than SQS's 256).
pub const MAX_NAME_LEN: usize = 64;

/// One SQS attribute: its data type and its value (text, or the bytes of a Binary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsAttribute {
    pub data_type: String,
    pub value: AttributeValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    Text(String),
    Binary(Vec<u8>),
}

fn invalid(message: String) -> SqsError {
    SqsError::invalid_attribute(message)
}

/// The `MessageAttributes` of a send, as SQS checks them.
pub fn parse(value: Option<&Value>) -> Result<BTreeMap<String, SqsAttribute>, SqsError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => return Err(invalid("MessageAttributes must be a map".into())),
    };
    if map.len() > MAX_SQS_ATTRIBUTES {
        return Err(invalid(format!(
            "Number of message attributes [{}] exceeds the allowed maximum [{MAX_SQS_ATTRIBUTES}].",
            map.len()
        )));
    }
    let mut attributes = BTreeMap::new();
    for (name, attribute) in map {
        check_name(name)?;
        let Value::Object(attribute) = attribute else {
            return Err(invalid(format!(
                "Message attribute {name} must be an object"
            )));
        };
        let data_type = attribute
            .get("DataType")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("The message attribute '{name}' must contain a non-empty message attribute type.")))?;
        let base = data_type.split('.').next().unwrap_or_default();
        let custom_ok = data_type
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !custom_ok || data_type.len() > 256 {
            return Err(invalid(format!(
                "The message attribute '{name}' has an invalid message attribute type {data_type:?}."
            )));
        }
        let value = match base {
            "String" | "Number" => {
                let text = attribute
                    .get("StringValue")
                    .and_then(Value::as_str)
                    .filter(|text| !text.is_empty())
                    .ok_or_else(|| invalid(format!("The message attribute '{name}' must contain a non-empty value of message attribute type '{data_type}'.")))?;
                if base == "Number" && !is_number(text) {
                    return Err(invalid(format!(
                        "Can't cast the value of message (user) attribute '{name}' to a number."
                    )));
                }
                AttributeValue::Text(text.to_string())
            }
            "Binary" => {
                let encoded = attribute
                    .get("BinaryValue")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("The message attribute '{name}' must contain a non-empty value of message attribute type '{data_type}'.")))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| {
                        invalid(format!(
                            "The message attribute '{name}' has a BinaryValue that is not base64."
                        ))
                    })?;
                if bytes.is_empty() {
                    return Err(invalid(format!(
                        "The message attribute '{name}' must contain a non-empty value of message attribute type '{data_type}'."
                    )));
                }
                AttributeValue::Binary(bytes)
            }
            _ => {
                return Err(invalid(format!(
                    "The type of message (user) attribute '{name}' is invalid. You must use only \
                     the following supported type prefixes: Binary, Number, String."
                )));
            }
        };
        attributes.insert(
            name.clone(),
            SqsAttribute {
                data_type: data_type.to_string(),
                value,
            },
        );
    }
    Ok(attributes)
}

fn check_name(name: &str) -> Result<(), SqsError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name != TYPES_KEY;
    let lower = name.to_ascii_lowercase();
    if !valid || lower.starts_with("aws.") || lower.starts_with("amazon.") {
        return Err(invalid(format!(
            "Message attribute name '{name}' is invalid: 1..={MAX_NAME_LEN} letters, digits, '-', \
             '_' and '.' (not first, last or twice in a row), not starting with AWS. or Amazon., \
             not {TYPES_KEY} (Spool's)"
        )));
    }
    Ok(())
}

fn is_number(text: &str) -> bool {
    let text = text.trim();
    !text.is_empty() && text.parse::<f64>().is_ok_and(f64::is_finite)
}

/// The attributes as Spool's map.
pub fn to_map(attributes: &BTreeMap<String, SqsAttribute>) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut types = Vec::new();
    for (name, attribute) in attributes {
        let value = match &attribute.value {
            AttributeValue::Text(text) => text.clone(),
            AttributeValue::Binary(bytes) => {
                base64::engine::general_purpose::STANDARD.encode(bytes)
            }
        };
        map.insert(name.clone(), value);
        if attribute.data_type != "String" {
            types.push(format!("{name}={}", attribute.data_type));
        }
    }
    if !types.is_empty() {
        map.insert(TYPES_KEY.to_string(), types.join(","));
    }
    map
}

/// Spool's map as SQS attributes (entries without a listed type are Strings).
pub fn from_map(map: &HashMap<String, String>) -> BTreeMap<String, SqsAttribute> {
    let types: HashMap<&str, &str> = map
        .get(TYPES_KEY)
        .map(|list| {
            list.split(',')
                .filter_map(|pair| pair.split_once('='))
                .collect()
        })
        .unwrap_or_default();
    map.iter()
        .filter(|(name, _)| name.as_str() != TYPES_KEY)
        .map(|(name, value)| {
            let data_type = types.get(name.as_str()).copied().unwrap_or("String");
            let value = if data_type.starts_with("Binary") {
                match base64::engine::general_purpose::STANDARD.decode(value) {
                    Ok(bytes) => AttributeValue::Binary(bytes),
                    Err(_) => AttributeValue::Text(value.clone()),
                }
            } else {
                AttributeValue::Text(value.clone())
            };
            let data_type = match value {
                // A value that does not decode (set by hand over gRPC) is shown as a String.
                AttributeValue::Text(_) if data_type.starts_with("Binary") => "String",
                _ => data_type,
            };
            (
                name.clone(),
                SqsAttribute {
                    data_type: data_type.to_string(),
                    value,
                },
            )
        })
        .collect()
}

/// The attributes a ReceiveMessage asked for (`MessageAttributeNames`: names, `All`, `.*`, or
/// `prefix.*`).
pub fn select(
    attributes: BTreeMap<String, SqsAttribute>,
    wanted: &[String],
) -> BTreeMap<String, SqsAttribute> {
    attributes
        .into_iter()
        .filter(|(name, _)| {
            wanted.iter().any(|pattern| {
                pattern == "All"
                    || pattern == ".*"
                    || pattern == name
                    || pattern
                        .strip_suffix(".*")
                        .is_some_and(|prefix| name.starts_with(&format!("{prefix}.")))
            })
        })
        .collect()
}

/// MessageAttributes in SQS's JSON.
pub fn to_json(attributes: &BTreeMap<String, SqsAttribute>) -> Value {
    let mut map = Map::new();
    for (name, attribute) in attributes {
        let value = match &attribute.value {
            AttributeValue::Text(text) => {
                json!({ "DataType": attribute.data_type, "StringValue": text })
            }
            AttributeValue::Binary(bytes) => json!({
                "DataType": attribute.data_type,
                "BinaryValue": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        };
        map.insert(name.clone(), value);
    }
    Value::Object(map)
}

/// MD5OfMessageAttributes as SQS computes it: for each attribute in name order, the name, the
/// data type (each as a 4-byte big-endian length and UTF-8 bytes), a transport byte (1 for
/// string values, 2 for binary), and the value (length-prefixed as well); the hex MD5 of it all.
pub fn md5_of(attributes: &BTreeMap<String, SqsAttribute>) -> Option<String> {
    if attributes.is_empty() {
        return None;
    }
    fn put(digest: &mut Md5, bytes: &[u8]) {
        digest.update((bytes.len() as u32).to_be_bytes());
        digest.update(bytes);
    }
    let mut digest = Md5::new();
    for (name, attribute) in attributes {
        put(&mut digest, name.as_bytes());
        put(&mut digest, attribute.data_type.as_bytes());
        match &attribute.value {
            AttributeValue::Text(text) => {
                digest.update([1u8]);
                put(&mut digest, text.as_bytes());
            }
            AttributeValue::Binary(bytes) => {
                digest.update([2u8]);
                put(&mut digest, bytes);
            }
        }
    }
    Some(hex(&digest.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data_type: &str, value: &str) -> SqsAttribute {
        SqsAttribute {
            data_type: data_type.into(),
            value: AttributeValue::Text(value.into()),
        }
    }

    #[test]
    fn the_map_form_is_reversible_and_plain_strings_stay_plain() {
        let attributes: BTreeMap<String, SqsAttribute> = [
            ("plain".to_string(), text("String", "v")),
            ("n".to_string(), text("Number.float", "1.5")),
            (
                "b".to_string(),
                SqsAttribute {
                    data_type: "Binary".into(),
                    value: AttributeValue::Binary(vec![0, 159, 255]),
                },
            ),
        ]
        .into_iter()
        .collect();
        let map = to_map(&attributes);
        assert_eq!(map.get("plain").map(String::as_str), Some("v"));
        assert_eq!(map.get("b").map(String::as_str), Some("AJ//"));
        assert_eq!(from_map(&map), attributes);
    }

    /// The digest of boto3's documentation example, as the AWS SDKs compute it.
    #[test]
    fn md5_is_sqs_s() {
        let one: BTreeMap<String, SqsAttribute> = [("a".to_string(), text("String", "b"))]
            .into_iter()
            .collect();
        // 0x00000001 'a' 0x00000006 'String' 0x01 0x00000001 'b'
        let mut bytes = Vec::new();
        bytes.extend([0, 0, 0, 1, b'a', 0, 0, 0, 6]);
        bytes.extend(b"String");
        bytes.extend([1, 0, 0, 0, 1, b'b']);
        assert_eq!(md5_of(&one), Some(hex(&Md5::digest(&bytes))));
        assert_eq!(md5_of(&BTreeMap::new()), None);
    }
}
