//! JSON text into a [`serde_json::Value`], every object and array allocated once at its final
//! size.
//!
//! serde_json's own `Value` visitor inserts member by member into a map that starts empty, so an
//! object of twenty members rehashes its index four times and moves its entries as often (this
//! and two smaller changes together: 3.8 % of an import's instructions, callgrind, 10 000
//! sessions). Here the members of an object being
//! read wait on a stack the thread keeps, and the map is built from them in one go. The parser,
//! its limits (nesting depth) and its errors are serde_json's: only the visitor differs, and the
//! tree it gives is the same, member order and duplicate keys (the last value wins, at the place
//! of the first) included.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses one JSON text (surrounding whitespace allowed, nothing else after it).
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    thread_local! {
        static SCRATCH: RefCell<Scratch> = RefCell::default();
    }
    SCRATCH.with_borrow_mut(|scratch| {
        // Left over only if the last parse failed half way.
        scratch.members.clear();
        scratch.elements.clear();
        let mut de = serde_json::Deserializer::from_str(text);
        let value = Seed(scratch).deserialize(&mut de);
        if scratch.members.capacity() + scratch.elements.capacity() > 1 << 16 {
            *scratch = Scratch::default(); // one huge document does not pin its stacks forever
        }
        let value = value?;
        de.end()?;
        Ok(value)
    })
}

/// Members and elements of the objects and arrays being read, innermost last.
#[derive(Default)]
struct Scratch {
    members: Vec<(String, Value)>,
    elements: Vec<Value>,
}

struct Seed<'s>(&'s mut Scratch);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // As serde_json's visitor (JSON text has no NaN or infinity to give here).
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let start = self.0.elements.len();
        while let Some(element) = seq.next_element_seed(Seed(&mut *self.0))? {
            self.0.elements.push(element);
        }
        Ok(Value::Array(self.0.elements.drain(start..).collect()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let start = self.0.members.len();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Seed(&mut *self.0))?;
            self.0.members.push((key, value));
        }
        // `Map::from_iter` sizes the map from the drain's exact length.
        let members: Map<String, Value> = self.0.members.drain(start..).collect();
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same tree as serde_json's, member order included (`Value`'s `==` ignores it, so the
    /// serialized texts are compared too).
    fn same_as_serde_json(text: &str) {
        let ours = from_str(text);
        let theirs = serde_json::from_str::<Value>(text);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{text}");
                assert_eq!(
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&b).unwrap(),
                    "{text}"
                );
            }
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
            (a, b) => panic!("{text}: ours {a:?}, serde_json's {b:?}"),
        }
    }

    #[test]
    fn gives_the_tree_serde_json_gives() {
        for text in [
            r#"{}"#,
            r#"[]"#,
            r#"{"b":1,"a":[1,2,{"z":null,"y":true}],"c":{"d":{"e":[]}}}"#,
            r#"{"dup":1,"x":2,"dup":3}"#,
            r#"[1, -1, 18446744073709551615, 18446744073709551616, -9223372036854775809, 1.5, 1e300, -0, 0.0]"#,
            r#"{"s":"esc \" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00 é"}"#,
            r#"  {"a" : [ 1 , 2 ] }  "#,
            r#""just a string""#,
            r#"null"#,
            // Errors: the same messages, positions included.
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"[1,2"#,
            r#"{"a":1e999}"#,
            r#""\ud800""#,
        ] {
            same_as_serde_json(text);
        }
        // Nesting deeper than serde_json allows (128) is refused the same way.
        same_as_serde_json(&format!("{}{}", "[".repeat(200), "]".repeat(200)));
        same_as_serde_json(&format!("{}1{}", "[".repeat(100), "]".repeat(100)));
    }

    #[test]
    fn a_failed_parse_leaves_nothing_behind() {
        assert!(from_str(r#"{"a":[1,{"b":2"#).is_err());
        let v = from_str(r#"{"c":[3]}"#).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"c":[3]}"#);
    }
}
