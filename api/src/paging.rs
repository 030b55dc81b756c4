//! Keyset pages of the admin lists: a page is fetched one row longer than asked, the extra row
//! showing that another page follows, and the position of its last row is sealed into an opaque
//! cursor bound to the list's filters.

use crate::error::ApiError;
use crate::validate::CursorScope;

/// The page of `limit` rows out of `rows` (fetched `limit + 1`), and the cursor of the next page
/// when the extra row shows there is one.
pub fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    scope: &CursorScope<'_>,
    position: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = more
        .then(|| rows.last())
        .flatten()
        .map(|last| scope.seal(&position(last)));
    (rows, next)
}

/// The position a `cursor` of `scope` carries, if one was given.
pub fn opened(scope: &CursorScope<'_>, cursor: Option<&str>) -> Result<Option<String>, ApiError> {
    cursor.map(|c| scope.open(c)).transpose()
}
