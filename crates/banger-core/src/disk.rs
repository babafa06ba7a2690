//! The per-VM root disk driver, as stored in `vms.disk_driver`.

use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// The per-VM root disk driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// Loop + COW file + dm `snapshot` target, via the helper. O(1) create.
    DmSnapshot,
    /// A clone that never writes the base (reflink or sparse copy).
    Copy,
}

impl Driver {
    /// The `vms.disk_driver` column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::DmSnapshot => "dm_snapshot",
            Driver::Copy => "copy",
        }
    }
}

impl std::fmt::Display for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `disk_driver` value this build does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown disk driver {0:?}")]
pub struct UnknownDriver(pub String);

impl FromStr for Driver {
    type Err = UnknownDriver;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Driver::DmSnapshot, Driver::Copy]
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDriver(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values_round_trip_and_unknown_ones_are_refused() {
        for d in [Driver::DmSnapshot, Driver::Copy] {
            assert_eq!(d.as_str().parse::<Driver>(), Ok(d));
        }
        assert_eq!(
            "".parse::<Driver>(),
            Err(UnknownDriver(String::new())),
            "an empty column means no disk yet, not a driver"
        );
        assert!("zfs".parse::<Driver>().is_err());
    }
}
