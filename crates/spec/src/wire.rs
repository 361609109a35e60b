//! The one shape of this crate's wire layouts.

/// Defines a wire layout: a `#[repr(C)]` struct of little-endian zerocopy fields (alignment 1,
/// so it parses from and serialises to any byte slice without padding or `unsafe`), with the
/// derives every layout here carries. The field list is the layout; each layout's tests pin
/// its size and offsets.
macro_rules! wire_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)+ }) => {
        $(#[$meta])*
        #[derive(
            ::zerocopy::FromBytes,
            ::zerocopy::IntoBytes,
            ::zerocopy::Immutable,
            ::zerocopy::KnownLayout,
            Clone,
            Copy,
            Debug,
            Default,
            PartialEq,
            Eq,
        )]
        #[repr(C)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)+
        }
    };
}
