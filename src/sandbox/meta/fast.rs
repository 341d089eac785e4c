//! A fast reader of Graph API upload bodies sent as JSON, in the shape clients write them:
//! `{"access_token": …, "session": {…}, "payload": {"schema": […], "data": [[…], …]}}`, compact
//! or spaced, whose keys and cells hold no escapes. It gives what the serde reader (`JsonBody`)
//! gives: every parameter but the payload object as its text (`raw_text`), the payload's schema
//! as a JSON value, its rows as borrowed cells. On anything else (an escape where it reads a
//! string itself, a key given twice, a row or cell of another type, a payload neither object nor
//! string) it gives up, and the serde reader decides the body. (serde's visitors, one a row and
//! one a cell, and its search for each string's end were a quarter of the emulator's time in
//! an upload of B1: 10,000 rows of six hashes a request.)

use super::{JsonBody, Params, Payload, RowShape, Rows, raw_text};
use crate::sandbox::Cell;
use crate::sandbox::json_reader::Reader;
use serde_json::Value;
use std::borrow::Cow;

/// Reads a JSON body, or `None` to leave it to the serde reader.
pub(super) fn body(text: &str) -> Option<JsonBody<'_>> {
    let mut r = Reader::new(text);
    let mut body = JsonBody {
        params: Params::new(),
        payload: None,
    };
    r.object(|r, key| {
        // serde keeps the last of a key given twice (and a payload given as an object and as a
        // string): rare enough to leave to it.
        if body.params.contains_key(key) || (key == "payload" && body.payload.is_some()) {
            return None;
        }
        match (key == "payload", r.peek()?) {
            (true, b'{') => body.payload = Some(payload(r)?),
            // A payload of JSON in a string, taken only without escapes: serde refuses a
            // string payload it cannot unescape (a lone surrogate), and with it the body, where
            // `raw_text` would give an empty text.
            (true, b'"') => {
                let text = r.string()?;
                body.params.insert(key.to_string(), Cow::Borrowed(text));
            }
            (false, _) => {
                let text = r.raw()?;
                body.params.insert(key.to_string(), raw_text(text));
            }
            // serde refuses a payload of another type, and with it the body.
            (true, _) => return None,
        }
        Some(())
    })?;
    r.at_end().then_some(body)
}

/// The `payload` object: `schema` as a JSON value, `data` as rows; other fields skipped, as
/// serde skips them.
fn payload<'a>(r: &mut Reader<'a>) -> Option<Payload<'a>> {
    let mut payload = Payload {
        schema: Value::Null,
        data: None,
    };
    r.fields(["schema", "data"], |r, i| {
        match i {
            0 => payload.schema = r.value()?,
            _ if r.null() => payload.data = None,
            _ => payload.data = Some(rows(r)?),
        }
        Some(())
    })?;
    Some(payload)
}

/// The `data` rows: lists of cells (strings or `null`), or bare strings (a single key's rows).
fn rows<'a>(r: &mut Reader<'a>) -> Option<Rows<'a>> {
    // A row of six hashes is about 400 bytes: room for the cells up front.
    let mut rows = Rows {
        cells: Vec::with_capacity(r.rest() / 64),
        rows: Vec::with_capacity(r.rest() / 400),
    };
    r.array(|r| {
        if r.peek()? == b'"' {
            let text = r.string()?;
            rows.cells.push(Cell(Some(Cow::Borrowed(text))));
            rows.rows.push(RowShape::One {
                at: rows.cells.len() - 1,
            });
            return Some(());
        }
        r.array(|r| {
            rows.cells.push(r.cell()?.unwrap_or(Cell(None)));
            Some(())
        })?;
        rows.rows.push(RowShape::Many {
            end: rows.cells.len(),
        });
        Some(())
    })?;
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::super::JsonBody;
    use super::body;

    /// What a body was read as, for comparing the two readers.
    fn described(body: &JsonBody) -> String {
        let mut params: Vec<_> = body.params.iter().collect();
        params.sort();
        let payload = body.payload.as_ref().map(|p| {
            let rows = p.data.as_ref().map(|rows| {
                rows.iter()
                    .map(|(shape, cells)| {
                        let cells: Vec<_> = cells.iter().map(|c| c.0.as_deref()).collect();
                        format!("{shape:?}{cells:?}")
                    })
                    .collect::<Vec<_>>()
            });
            format!("schema {} rows {rows:?}", p.schema)
        });
        format!("{params:?} {payload:?}")
    }

    fn by_serde(text: &str) -> Option<String> {
        serde_json::from_str::<JsonBody>(text)
            .ok()
            .map(|b| described(&b))
    }

    #[test]
    fn bodies_clients_write_are_read_as_serde_reads_them() {
        let hash = "a".repeat(64);
        let bodies = [
            format!(
                r#"{{"access_token":"t","session":{{"session_id":1,"batch_seq":2,"last_batch_flag":false}},"payload":{{"schema":["EMAIL","PHONE"],"data":[["{hash}",""],["","{hash}"]],"is_raw":true}}}}"#
            ),
            // Spaced, as Python's json.dumps writes it, with null cells and an empty row.
            format!(
                "{{ \"access_token\": \"t\", \"payload\": {{ \"schema\": [\"EMAIL\"], \"data\": [ [ \"{hash}\" ], [ null ], [] ] }} }}\n"
            ),
            // A single key's bare values; the payload's fields in the other order.
            format!(r#"{{"payload":{{"data":["{hash}","b"],"schema":"EMAIL_SHA256"}}}}"#),
            // The payload as a string of JSON (a form's way), and other parameters of any type,
            // escapes in their strings too.
            r#"{"payload":"[]","n":3,"list":[1,{"a":null}],"flag":true,"s":"a\"b\u00e9"}"#
                .to_string(),
            r#"{"payload":{"schema":null,"data":null}}"#.to_string(),
            r#"{"payload":{}}"#.to_string(),
            "{}".to_string(),
            // Unicode in a cell, without escapes.
            r#"{"payload":{"schema":["FN"],"data":[["josé"]]}}"#.to_string(),
        ];
        for text in &bodies {
            let fast = body(text).unwrap_or_else(|| panic!("fast reader gave up on {text}"));
            assert_eq!(Some(described(&fast)), by_serde(text), "{text}");
        }
    }

    #[test]
    fn other_bodies_are_left_to_serde() {
        let bodies = [
            // An escape in a cell or a key, a cell or row of another type.
            r#"{"payload":{"schema":["EMAIL"],"data":[["a\"b"]]}}"#,
            r#"{"pay\u006coad":{"schema":["EMAIL"],"data":[["a"]]}}"#,
            r#"{"payload":{"schema":["EMAIL"],"data":[[1]]}}"#,
            r#"{"payload":{"schema":["EMAIL"],"data":[true]}}"#,
            // Keys given twice, in the body or the payload.
            r#"{"a":"1","a":"2"}"#,
            r#"{"payload":"x","payload":{"schema":"EMAIL"}}"#,
            r#"{"payload":{"data":[],"data":[]}}"#,
            // A string payload with escapes (serde refuses a lone surrogate, and the body).
            r#"{"access_token":"t","payload":"\ud800"}"#,
            r#"{"payload":"{\"schema\":\"EMAIL\"}"}"#,
            // A payload of another type, and bodies that are not JSON objects.
            r#"{"payload":3}"#,
            r#"{"payload":{"data":"x"}}"#,
            r#"[1]"#,
            r#"{"payload":{"schema":["EMAIL"],"data":[["a"]]}} x"#,
            r#"{"payload":{"schema":["EMAIL"],"data":[["a"]"#,
        ];
        for text in bodies {
            assert!(body(text).is_none(), "{text}");
            // serde reads some of them (its own way) and refuses others: either way, its word.
            let _ = by_serde(text);
        }
    }
}
