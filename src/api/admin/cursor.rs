//! Opaque page cursors of the admin lists: the keyset position of the last
//! item of a page, base64url-encoded so clients do not build them.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use time::OffsetDateTime;
use uuid::Uuid;

/// The cursor after a user created at `created_at` with id `id`.
pub fn encode_user(created_at: OffsetDateTime, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("u:{}:{id}", created_at.unix_timestamp_nanos()))
}

/// The position a user cursor names; `None` when it is not one.
pub fn decode_user(cursor: &str) -> Option<(OffsetDateTime, Uuid)> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    let (nanos, id) = text.strip_prefix("u:")?.split_once(':')?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().ok()?).ok()?;
    Some((at, id.parse().ok()?))
}

/// The cursor after the audit event `id`.
pub fn encode_event(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("a:{id}"))
}

/// The event id an audit cursor names; `None` when it is not one.
pub fn decode_event(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix("a:")?.parse().ok().filter(|id| *id > 0)
}

/// The cursor after the webhook delivery `id`.
pub fn encode_delivery(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("d:{id}"))
}

/// The delivery id a delivery cursor names; `None` when it is not one.
pub fn decode_delivery(cursor: &str) -> Option<i64> {
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).ok()?).ok()?;
    text.strip_prefix("d:")?.parse().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_790_000_000_123_456_000).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_user(&encode_user(at, id)), Some((at, id)));
        assert_eq!(decode_event(&encode_event(42)), Some(42));
        assert_eq!(decode_delivery(&encode_delivery(7)), Some(7));
        assert_eq!(decode_delivery(&encode_event(7)), None);
        assert_eq!(decode_delivery(&URL_SAFE_NO_PAD.encode("d:0")), None);
        for bad in [
            "",
            "x",
            "!!!",
            &encode_event(42),
            &URL_SAFE_NO_PAD.encode("u:12:not-a-uuid"),
        ] {
            assert_eq!(decode_user(bad), None, "{bad}");
        }
        for bad in [
            "",
            &encode_user(at, id),
            &URL_SAFE_NO_PAD.encode("a:-1"),
            &URL_SAFE_NO_PAD.encode("a:x"),
        ] {
            assert_eq!(decode_event(bad), None, "{bad}");
        }
    }
}
