//! The result codes of a command (`le16 status; le16 status_qualifier`), each set written once:
//! a typed enum with [`TryFrom<u16>`] and the spec's names, and the wire numbers as constants
//! under the spec's names (the `status` and `qualifier` modules), generated from the same table.

use thiserror::Error;

/// Defines, from one table of `Variant = CONST = value` rows: the enum, its `ALL` list, its
/// `name()` (the constant's name), `TryFrom<u16>` (refusing anything else with `$Unknown`),
/// `From<$Enum> for u16`, and the module `$module` of `pub const CONST: u16 = value`.
macro_rules! wire_codes {
    (
        $(#[$enum_meta:meta])*
        pub enum $Enum:ident (reserved: $Unknown:ident) in $(#[$mod_meta:meta])* $module:ident {
            $($(#[$meta:meta])* $Variant:ident = $CONST:ident = $value:literal,)+
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum $Enum {
            $($(#[$meta])* $Variant = $value,)+
        }

        impl $Enum {
            /// Every value, in numeric order.
            pub const ALL: &'static [$Enum] = &[$(Self::$Variant),+];

            /// The spec's name (`"EINVAL"`, `"Q_INVALID_FIELD"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$Variant => stringify!($CONST),)+
                }
            }
        }

        impl TryFrom<u16> for $Enum {
            type Error = $Unknown;

            fn try_from(value: u16) -> Result<Self, $Unknown> {
                match value {
                    $($value => Ok(Self::$Variant),)+
                    _ => Err($Unknown(value)),
                }
            }
        }

        impl From<$Enum> for u16 {
            fn from(value: $Enum) -> u16 {
                value as u16
            }
        }

        $(#[$mod_meta])*
        pub mod $module {
            $($(#[$meta])* pub const $CONST: u16 = $value;)+
        }
    };
}

wire_codes! {
    /// `status`: a Linux errno number. A driver treats a value not listed as EINVAL.
    pub enum AdminStatus (reserved: ReservedStatus) in
    /// `status` values ([`AdminStatus`] as wire numbers).
    status {
        /// Success.
        Ok = OK = 0,
        /// No such device or address.
        Enxio = ENXIO = 6,
        /// Try again; the command had no side effects.
        Eagain = EAGAIN = 11,
        /// Out of memory; the command had no side effects.
        Enomem = ENOMEM = 12,
        /// Device or resource busy.
        Ebusy = EBUSY = 16,
        /// Invalid command; it had no side effects.
        Einval = EINVAL = 22,
        /// No space left.
        Enospc = ENOSPC = 28,
    }
}

wire_codes! {
    /// `status_qualifier`; 0x08 and above are reserved (a driver treats them as
    /// Q_INVALID_COMMAND).
    pub enum StatusQualifier (reserved: ReservedQualifier) in
    /// `status_qualifier` values ([`StatusQualifier`] as wire numbers).
    qualifier {
        /// Success (always with status OK).
        Ok = Q_OK = 0x00,
        /// Malformed command (also how a driver treats a reserved qualifier).
        InvalidCommand = Q_INVALID_COMMAND = 0x01,
        /// Unknown or unused opcode.
        InvalidOpcode = Q_INVALID_OPCODE = 0x02,
        /// Invalid value in the command data.
        InvalidField = Q_INVALID_FIELD = 0x03,
        /// Invalid or absent group.
        InvalidGroup = Q_INVALID_GROUP = 0x04,
        /// Member id out of range.
        InvalidMember = Q_INVALID_MEMBER = 0x05,
        /// Out of resources; may be retried.
        NoResource = Q_NORESOURCE = 0x06,
        /// Retry later.
        TryAgain = Q_TRYAGAIN = 0x07,
    }
}

/// A `status` value that is not an [`AdminStatus`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("reserved admin status {0}")]
pub struct ReservedStatus(pub u16);

/// A `status_qualifier` value that is not a [`StatusQualifier`].
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[error("reserved status qualifier {0:#04x}")]
pub struct ReservedQualifier(pub u16);
