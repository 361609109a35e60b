//! Test helpers for the wire layouts: one call pins a struct's size, alignment and field
//! offsets; another pins a value's bytes and that they read back to the same value.

use core::fmt::Debug;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Pins `size_of::<$t>()`, an alignment of 1 (so the struct sits at any guest offset) and each
/// `offset_of!($t, $field)`; with `bindings $c`, also that the virtio-bindings struct `$c` has
/// the same size.
macro_rules! assert_layout {
    ($t:ty, $size:expr $(, bindings $c:ty)?; $($field:ident @ $off:expr),+ $(,)?) => {{
        let name = stringify!($t);
        assert_eq!(::core::mem::size_of::<$t>(), $size, "size of {name}");
        $(assert_eq!(::core::mem::size_of::<$c>(), $size, "size of {}", stringify!($c));)?
        assert_eq!(::core::mem::align_of::<$t>(), 1, "alignment of {name}");
        $(assert_eq!(
            ::core::mem::offset_of!($t, $field),
            $off,
            "offset of {name}::{}",
            stringify!($field)
        );)+
    }};
}

/// Asserts that `value` serialises to exactly `wire`, that `wire` reads back to `value` and that
/// one byte less does not read at all; returns the read-back value.
pub(crate) fn assert_wire<T>(value: &T, wire: &[u8]) -> T
where
    T: FromBytes + IntoBytes + Immutable + KnownLayout + PartialEq + Debug,
{
    assert_eq!(value.as_bytes(), wire, "bytes of {value:?}");
    let back = T::read_from_bytes(wire).expect("the bytes read back");
    assert_eq!(&back, value);
    assert!(T::read_from_bytes(&wire[..wire.len() - 1]).is_err());
    back
}
