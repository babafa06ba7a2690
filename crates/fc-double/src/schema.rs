//! The API contract as data: operations and body shapes read from the vendored `firecracker.yaml`.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// The vendored Swagger description (Firecracker v1.16.1).
pub const FIRECRACKER_YAML: &str = include_str!("../contract/firecracker.yaml");

/// What a JSON value must look like, as Firecracker's serde types see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A JSON string.
    Str,
    /// A JSON string that must parse as a MAC address (`aa:bb:cc:dd:ee:ff`).
    Mac,
    /// `true` / `false`.
    Bool,
    /// An integer held in the named Rust type (`u8`, `u32`, `usize`, ...).
    Int(&'static str),
    /// A unit-variant enum spelled as a string.
    Enum {
        variants: Vec<String>,
        case_insensitive: bool,
    },
    /// An object of the named definition.
    Struct(String),
    /// An object of the named definition with every field optional
    /// (Firecracker's `*Update` structs behind some PATCH calls).
    Partial(String),
    /// A JSON array of the inner shape.
    Array(Box<Shape>),
    /// Any JSON value (`additionalProperties: true` objects such as MMDS).
    Any,
}

/// One property of an object definition.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub shape: Shape,
    pub required: bool,
    /// `null` is accepted (the Rust field is an `Option`).
    pub nullable: bool,
}

/// An object definition, fields in the order Firecracker's Rust struct
/// declares them (the order serde lists them in `expected one of ...`).
#[derive(Debug, Clone)]
pub struct Def {
    pub rust_name: String,
    pub fields: Vec<Field>,
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    Param(String),
}

/// One (method, path) pair of the yaml.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: String,
    pub template: String,
    pub segs: Vec<Seg>,
    /// The body's shape, when the operation takes one.
    pub body: Option<Shape>,
    /// The yaml marks the body parameter `required: true`.
    pub body_required: bool,
}

/// The whole contract.
#[derive(Debug, Clone)]
pub struct Contract {
    pub version: String,
    pub ops: Vec<Operation>,
    pub defs: BTreeMap<String, Def>,
}

/// The contract does not parse as the Swagger shape this crate expects.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("firecracker.yaml does not parse")]
    Parse(#[source] serde_yaml::Error),
    #[error("firecracker.yaml: {0}")]
    Shape(String),
}

/// What the yaml cannot say about Firecracker's Rust types: the struct
/// name, field order, integer widths, non-`Option` defaulted fields, MAC
/// fields and case-insensitive enums. Only the definitions banger drives
/// (and their nested types) are described; the others keep yaml order,
/// `u64`/`i32`/`i64` integers and `Option` optional fields.
struct Hint {
    def: &'static str,
    rust_name: &'static str,
    order: &'static [&'static str],
    ints: &'static [(&'static str, &'static str)],
    not_null: &'static [&'static str],
    mac: &'static [&'static str],
    case_insensitive: &'static [&'static str],
}

const HINTS: &[Hint] = &[
    Hint {
        def: "MachineConfiguration",
        rust_name: "MachineConfig",
        order: &[
            "vcpu_count",
            "mem_size_mib",
            "smt",
            "cpu_template",
            "track_dirty_pages",
            "huge_pages",
        ],
        ints: &[("vcpu_count", "u8"), ("mem_size_mib", "usize")],
        not_null: &["smt", "track_dirty_pages", "huge_pages"],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "BootSource",
        rust_name: "BootSourceConfig",
        order: &["kernel_image_path", "initrd_path", "boot_args"],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "Drive",
        rust_name: "BlockDeviceConfig",
        order: &[],
        ints: &[],
        not_null: &["cache_type"],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "NetworkInterface",
        rust_name: "NetworkInterfaceConfig",
        order: &[
            "iface_id",
            "host_dev_name",
            "guest_mac",
            "rx_rate_limiter",
            "tx_rate_limiter",
            "mtu",
        ],
        ints: &[("mtu", "u16")],
        not_null: &[],
        mac: &["guest_mac"],
        case_insensitive: &[],
    },
    Hint {
        def: "Vsock",
        rust_name: "VsockDeviceConfig",
        order: &["vsock_id", "guest_cid", "uds_path"],
        ints: &[("guest_cid", "u32")],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "Logger",
        rust_name: "LoggerConfig",
        order: &[
            "log_path",
            "level",
            "show_level",
            "show_log_origin",
            "module",
        ],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &["level"],
    },
    Hint {
        def: "InstanceActionInfo",
        rust_name: "ActionBody",
        order: &[],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "Vm",
        rust_name: "Vm",
        order: &[],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "PartialDrive",
        rust_name: "BlockDeviceUpdateConfig",
        order: &[],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "TokenBucket",
        rust_name: "TokenBucketConfig",
        order: &["size", "one_time_burst", "refill_time"],
        ints: &[
            ("size", "u64"),
            ("one_time_burst", "u64"),
            ("refill_time", "u64"),
        ],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "RateLimiter",
        rust_name: "RateLimiterConfig",
        order: &[],
        ints: &[],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
    Hint {
        def: "Balloon",
        rust_name: "BalloonDeviceConfig",
        order: &[],
        ints: &[("amount_mib", "u32"), ("stats_polling_interval_s", "u16")],
        not_null: &[],
        mac: &[],
        case_insensitive: &[],
    },
];

fn bad(msg: impl Into<String>) -> ContractError {
    ContractError::Shape(msg.into())
}

impl Contract {
    /// The vendored contract. It is compiled in, so this only fails if the
    /// vendored file is broken, which the crate's tests catch.
    pub fn vendored() -> Result<Contract, ContractError> {
        Contract::parse(FIRECRACKER_YAML)
    }

    /// Parse a Swagger 2.0 document of Firecracker's shape.
    pub fn parse(text: &str) -> Result<Contract, ContractError> {
        let doc: Value = serde_yaml::from_str(text).map_err(ContractError::Parse)?;
        let version = doc["info"]["version"]
            .as_str()
            .map(str::to_string)
            .or_else(|| doc["info"]["version"].as_f64().map(|v| v.to_string()))
            .ok_or_else(|| bad("info.version missing"))?;
        let raw_defs = doc["definitions"]
            .as_mapping()
            .ok_or_else(|| bad("definitions missing"))?;
        let mut defs = BTreeMap::new();
        for (name, def) in raw_defs {
            let name = name.as_str().ok_or_else(|| bad("definition name"))?;
            if let Some(d) = object_def(name, def, raw_defs)? {
                defs.insert(name.to_string(), d);
            }
        }
        let mut ops = Vec::new();
        let paths = doc["paths"]
            .as_mapping()
            .ok_or_else(|| bad("paths missing"))?;
        for (path, methods) in paths {
            let template = path.as_str().ok_or_else(|| bad("path key"))?;
            let methods = methods
                .as_mapping()
                .ok_or_else(|| bad(format!("{template}: not a mapping")))?;
            for (method, op) in methods {
                let method = method.as_str().ok_or_else(|| bad("method key"))?;
                let mut body = None;
                let mut body_required = false;
                for p in op["parameters"].as_sequence().into_iter().flatten() {
                    if p["in"].as_str() == Some("body") {
                        body_required = p["required"].as_bool() == Some(true);
                        let def = ref_name(&p["schema"]).ok_or_else(|| {
                            bad(format!("{method} {template}: body without $ref"))
                        })?;
                        body = Some(shape_of_ref(def, raw_defs)?);
                    }
                }
                // PATCH /machine-config is MachineConfigUpdate in Firecracker:
                // the yaml reuses MachineConfiguration but every field is optional.
                if method == "patch" && template == "/machine-config" {
                    if let Some(Shape::Struct(d)) = body {
                        body = Some(Shape::Partial(d));
                    }
                }
                ops.push(Operation {
                    method: method.to_ascii_uppercase(),
                    template: template.to_string(),
                    segs: segments(template),
                    body,
                    body_required,
                });
            }
        }
        Ok(Contract { version, ops, defs })
    }

    /// The operations declared for a concrete path, and the operation for
    /// `method` among them, with the path parameter's value.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Operation, Option<String>)> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.ops.iter().find_map(|op| {
            if op.method != method {
                return None;
            }
            let segs: &[Seg] = &op.segs;
            if segs.len() != parts.len() {
                return None;
            }
            let mut param = None;
            for (s, p) in segs.iter().zip(&parts) {
                match s {
                    Seg::Lit(l) if l == p => {}
                    Seg::Param(_) if !p.is_empty() => param = Some(p.to_string()),
                    _ => return None,
                }
            }
            Some((op, param))
        })
    }

    /// Whether `method` has a `/<first>/{param}` operation: the path named a
    /// resource but left its id out.
    pub fn wants_id(&self, method: &str, first: &str) -> bool {
        self.ops.iter().any(|op| {
            op.method == method
                && matches!(op.segs.as_slice(), [Seg::Lit(l), Seg::Param(_)] if l == first)
        })
    }

    /// The object definition `name`.
    pub fn def(&self, name: &str) -> Option<&Def> {
        self.defs.get(name)
    }
}

fn segments(template: &str) -> Vec<Seg> {
    template
        .trim_start_matches('/')
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) => Seg::Param(p.to_string()),
                None => Seg::Lit(s.to_string()),
            },
        )
        .collect()
}

fn ref_name(v: &Value) -> Option<&str> {
    v["$ref"].as_str()?.strip_prefix("#/definitions/")
}

/// The shape a `$ref` to `name` stands for: an object, a string enum, or free-form.
fn shape_of_ref(name: &str, raw: &serde_yaml::Mapping) -> Result<Shape, ContractError> {
    let def = raw
        .get(name)
        .ok_or_else(|| bad(format!("$ref to missing definition {name}")))?;
    if def["type"].as_str() == Some("string") {
        return Ok(enum_shape(def, false).unwrap_or(Shape::Str));
    }
    if def["properties"].as_mapping().is_none()
        && def["additionalProperties"].as_bool() == Some(true)
    {
        return Ok(Shape::Any);
    }
    Ok(Shape::Struct(name.to_string()))
}

fn enum_shape(v: &Value, case_insensitive: bool) -> Option<Shape> {
    let variants = v["enum"]
        .as_sequence()?
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        })
        .collect();
    Some(Shape::Enum {
        variants,
        case_insensitive,
    })
}

fn object_def(
    name: &str,
    def: &Value,
    raw: &serde_yaml::Mapping,
) -> Result<Option<Def>, ContractError> {
    let Some(props) = def["properties"].as_mapping() else {
        return Ok(None);
    };
    let hint = HINTS.iter().find(|h| h.def == name);
    let required: Vec<&str> = def["required"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut fields = Vec::new();
    for (fname, prop) in props {
        let fname = fname.as_str().ok_or_else(|| bad("property name"))?;
        if prop["readOnly"].as_bool() == Some(true) {
            continue;
        }
        let shape = prop_shape(name, fname, prop, raw, hint)?;
        let is_required = required.contains(&fname);
        let nullable = !is_required && !hint.is_some_and(|h| h.not_null.contains(&fname));
        fields.push(Field {
            name: fname.to_string(),
            shape,
            required: is_required,
            nullable,
        });
    }
    if let Some(h) = hint.filter(|h| !h.order.is_empty()) {
        fields.sort_by_key(|f| {
            h.order
                .iter()
                .position(|o| *o == f.name)
                .unwrap_or(usize::MAX)
        });
    }
    Ok(Some(Def {
        rust_name: hint.map_or(name, |h| h.rust_name).to_string(),
        fields,
    }))
}

fn prop_shape(
    def: &str,
    field: &str,
    prop: &Value,
    raw: &serde_yaml::Mapping,
    hint: Option<&Hint>,
) -> Result<Shape, ContractError> {
    if let Some(r) = ref_name(prop) {
        return shape_of_ref(r, raw);
    }
    let ci = hint.is_some_and(|h| h.case_insensitive.contains(&field));
    Ok(match prop["type"].as_str() {
        Some("string") if hint.is_some_and(|h| h.mac.contains(&field)) => Shape::Mac,
        Some("string") => enum_shape(prop, ci).unwrap_or(Shape::Str),
        Some("boolean") => Shape::Bool,
        Some("integer") => {
            let hinted = hint.and_then(|h| h.ints.iter().find(|(f, _)| *f == field));
            Shape::Int(match (hinted, prop["format"].as_str()) {
                (Some((_, t)), _) => t,
                (None, Some("int32")) => "i32",
                (None, Some("int64")) => "i64",
                (None, _) => "u64",
            })
        }
        Some("array") => Shape::Array(Box::new(prop_shape(def, field, &prop["items"], raw, None)?)),
        Some("object") => Shape::Any,
        other => return Err(bad(format!("{def}.{field}: unsupported type {other:?}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_contract_parses_with_every_path() {
        let c = Contract::vendored().unwrap();
        assert_eq!(c.version, "1.16.1");
        assert_eq!(
            c.ops.len(),
            38,
            "one Operation per (path, method) in the yaml"
        );
        let (op, id) = c.route("PUT", "/drives/rootfs").unwrap();
        assert_eq!(op.template, "/drives/{drive_id}");
        assert_eq!(id.as_deref(), Some("rootfs"));
        assert_eq!(op.body, Some(Shape::Struct("Drive".into())));
        assert!(c.route("DELETE", "/machine-config").is_none());
        assert!(c.route("PUT", "/drives/").is_none());
        assert!(c.route("GET", "/nonexistent").is_none());
    }

    #[test]
    fn machine_config_fields_follow_the_rust_struct() {
        let c = Contract::vendored().unwrap();
        let d = c.def("MachineConfiguration").unwrap();
        let names: Vec<&str> = d.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "vcpu_count",
                "mem_size_mib",
                "smt",
                "cpu_template",
                "track_dirty_pages",
                "huge_pages"
            ]
        );
        assert_eq!(d.fields[0].shape, Shape::Int("u8"));
        assert!(d.fields[0].required && !d.fields[2].nullable && d.fields[3].nullable);
    }
}
