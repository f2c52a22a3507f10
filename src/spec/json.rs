//! JSON read as the other input formats are: `serde_json` keeps the last of a repeated key
//! silently (`{"dp": 4, "dp": 8}` ran with dp 8), where the YAML reader refuses one.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Parses `text`, refusing a key that an object repeats: the error names it and where
/// (`parallel.dp`), as serde_json names a syntax error's line.
pub fn parse(text: &str) -> Result<serde_json::Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    if let Err(e) = (Walk {
        path: String::new(),
    })
    .deserialize(&mut de)
    {
        return Err(e.to_string());
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Visits a value, checking every object's keys, below `path`.
struct Walk {
    path: String,
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk {
                path: format!("{}[{i}]", self.path),
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(format!(
                    "`{path}` is given twice; keep one"
                )));
            }
            map.next_value_seed(Walk { path })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_key_is_named_with_its_place() {
        assert!(parse(r#"{"dp": 4, "tp": 2}"#).is_ok());
        let e = parse(r#"{"dp": 4, "dp": 8}"#).unwrap_err();
        assert!(e.contains("`dp` is given twice"), "{e}");
        let e = parse(r#"{"a": [{"b": 1}, {"b": 1, "b": 2}]}"#).unwrap_err();
        assert!(e.contains("`a[1].b` is given twice"), "{e}");
        // Syntax errors still say where.
        assert!(parse("{\"dp\": 4,}").unwrap_err().contains("line 1"));
    }
}
