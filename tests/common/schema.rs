//! A minimal JSON Schema checker for the tools' `outputSchema`s: exactly the keywords those
//! schemas use — `type` (a name or a list of names), `properties`, `required`, `items`,
//! `enum`, `additionalProperties: false` and local `$ref`s to `#/$defs/NAME` — and an error
//! for any other keyword, so a schema that grows past it fails loudly instead of passing
//! unchecked.
//!
//! Why not the `jsonschema` crate: it would bring its own regex, URL and HTTP-resolution
//! stacks into the dev tree (second copies of crates we already build) to check a dozen
//! keywords; this checker is tested against failing documents (tests/tasks_bridges.rs), so
//! it cannot pass everything.

use serde_json::Value;

/// Checks `doc` against `schema` (whose `$defs` are looked up in `root`). Returns every
/// violation, with its JSON pointer.
pub fn check(root: &Value, schema: &Value, doc: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = schema.as_object() else {
        errors.push(format!("{at}: schema is not an object"));
        return;
    };
    for key in s.keys() {
        if !matches!(
            key.as_str(),
            "type"
                | "properties"
                | "required"
                | "items"
                | "enum"
                | "additionalProperties"
                | "$ref"
                | "$defs"
                | "description"
                | "minimum"
                | "maximum"
        ) {
            errors.push(format!(
                "{at}: keyword {key:?} is not supported by this checker"
            ));
        }
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match r
            .strip_prefix("#/$defs/")
            .and_then(|n| root["$defs"].get(n))
        {
            Some(target) => check(root, target, doc, at, errors),
            None => errors.push(format!("{at}: unresolvable $ref {r}")),
        }
    }
    if let Some(t) = s.get("type") {
        let names: Vec<&str> = match t {
            Value::String(n) => vec![n.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = names.iter().any(|n| match *n {
            "object" => doc.is_object(),
            "array" => doc.is_array(),
            "string" => doc.is_string(),
            "boolean" => doc.is_boolean(),
            "null" => doc.is_null(),
            "integer" => doc.is_i64() || doc.is_u64(),
            "number" => doc.is_number(),
            _ => false,
        });
        if !ok {
            errors.push(format!("{at}: {doc} is not of type {t}"));
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(doc)
    {
        errors.push(format!("{at}: {doc} is not one of {options:?}"));
    }
    if let Some(obj) = doc.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = req.as_str()
                && !obj.contains_key(k)
            {
                errors.push(format!("{at}: missing required {k:?}"));
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => check(root, sub, v, &format!("{at}/{k}"), errors),
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errors.push(format!("{at}: unexpected property {k:?}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (s.get("items"), doc.as_array()) {
        for (i, v) in list.iter().enumerate() {
            check(root, items, v, &format!("{at}/{i}"), errors);
        }
    }
}

/// Every violation of `schema` by `doc` (empty: valid).
pub fn violations(schema: &Value, doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, doc, "", &mut errors);
    errors
}
