//! Text serialisation of the domain's value types for the consent store and exports. Parsing
//! on the way in keeps the store's contents as valid as anything else built from them.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

use crate::{Category, OrgNumber, Purpose, Role, SubjectId};

macro_rules! as_text {
    ($ty:ty, $to:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let to: fn(&$ty) -> String = $to;
                s.serialize_str(&to(self))
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(D::Error::custom)
            }
        }
    };
}

as_text!(OrgNumber, |v| v.to_string());
as_text!(SubjectId, |v| v.expose());
as_text!(Role, |v| v.as_str().to_owned());
as_text!(Category, |v| v.as_str().to_owned());
as_text!(Purpose, |v| v.as_str().to_owned());
