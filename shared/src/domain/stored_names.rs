//! The stored names of states kept as text under a check constraint.

/// Implements, for an enum of states stored as text, `ALL` (every state, in declaration order),
/// `as_str` (the stored name, also the serialized one where the enum is serialized) and
/// `Display` (the stored name, as the console shows it). The names repeat the enum's `sqlx`
/// renames; each enum's test checks that they agree, so the match here is the one place a new
/// state must be named.
macro_rules! stored_names {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every state.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use stored_names;

/// The text a value is bound as in a statement, for tests that `as_str` names what is stored.
#[cfg(test)]
pub(crate) fn bound_text<T>(value: &T) -> String
where
    T: for<'q> sqlx::Encode<'q, sqlx::Postgres>,
{
    let mut buf = sqlx::postgres::PgArgumentBuffer::default();
    let _ = value.encode_by_ref(&mut buf).expect("encodes");
    String::from_utf8(buf.to_vec()).expect("text")
}
