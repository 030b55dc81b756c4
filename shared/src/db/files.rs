//! Files of the OpenAI-compatible Files API: a row per file and its content in chunks of at most
//! [`CHUNK_BYTES`], written and read one chunk at a time so a large file never sits whole in
//! memory. A file belongs to one team; every lookup is by team, so another team's file is
//! simply not found.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::batch_api::FilePurpose;

/// Largest chunk stored in one row.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// A stored file, as listed.
#[derive(Debug, Clone)]
pub struct FileRow {
    pub file_id: String,
    pub team_id: String,
    pub purpose: FilePurpose,
    pub filename: String,
    pub bytes: i64,
    pub line_count: i64,
    pub created_at: DateTime<Utc>,
}

/// `sqlx::query_as!` into [`FileRow`], with the file's column list between `$head` and `$tail`
/// (`$tail` may go on in more `+ "..."` literals). sqlx's macros take only string literals, so
/// the list cannot be a constant.
macro_rules! query_file {
    ($head:literal, $tail:literal $(+ $more:literal)* $(, $arg:expr)* $(,)?) => {
        sqlx::query_as!(
            FileRow,
            $head
                + r#"file_id, team_id, purpose as "purpose: FilePurpose", filename, bytes, line_count,
                     created_at"#
                + $tail
                $(+ $more)*
            $(, $arg)*
        )
    };
}

/// A new file id: `file-` and a time-ordered UUID, so ids sort by creation.
pub fn new_file_id() -> String {
    format!("file-{}", Uuid::now_v7().simple())
}

/// Writes a file's content as it comes: whole chunks are stored as soon as they fill, and
/// the size and line count are kept. Create with [`ChunkWriter::start`], end with
/// [`ChunkWriter::finish`], all on one connection (a transaction, so a file is whole or absent).
pub struct ChunkWriter {
    file_id: String,
    pending: Vec<u8>,
    next_seq: i32,
    bytes: i64,
    lines: i64,
    /// Whether the last byte written was a newline (a last line without one still counts).
    ends_with_newline: bool,
}

impl ChunkWriter {
    /// Inserts the file's row (empty until finished) and returns its writer.
    pub async fn start(
        conn: &mut PgConnection,
        file_id: &str,
        team_id: &str,
        purpose: FilePurpose,
        filename: &str,
    ) -> sqlx::Result<Self> {
        sqlx::query!(
            "insert into files (file_id, team_id, purpose, filename, bytes, line_count)
             values ($1, $2, $3, $4, 0, 0)",
            file_id,
            team_id,
            purpose as FilePurpose,
            filename
        )
        .execute(conn)
        .await?;
        Ok(Self {
            file_id: file_id.to_owned(),
            pending: Vec::with_capacity(CHUNK_BYTES),
            next_seq: 0,
            bytes: 0,
            lines: 0,
            ends_with_newline: true,
        })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> i64 {
        self.bytes
    }

    /// Lines written so far (a last line without a newline counts).
    pub fn lines(&self) -> i64 {
        self.lines + i64::from(!self.ends_with_newline)
    }

    /// Appends `data`, storing each chunk that fills.
    pub async fn write(&mut self, conn: &mut PgConnection, mut data: &[u8]) -> sqlx::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.bytes += data.len() as i64;
        self.lines += data.iter().filter(|&&b| b == b'\n').count() as i64;
        self.ends_with_newline = data.last() == Some(&b'\n');
        while !data.is_empty() {
            let room = CHUNK_BYTES - self.pending.len();
            let (now, rest) = data.split_at(room.min(data.len()));
            self.pending.extend_from_slice(now);
            data = rest;
            if self.pending.len() == CHUNK_BYTES {
                self.flush(conn).await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        sqlx::query!(
            "insert into file_chunks (file_id, seq, data) values ($1, $2, $3)",
            self.file_id,
            self.next_seq,
            self.pending
        )
        .execute(conn)
        .await?;
        self.next_seq += 1;
        self.pending.clear();
        Ok(())
    }

    /// Stores the last chunk and the file's size and line count; returns the file's row.
    pub async fn finish(mut self, conn: &mut PgConnection) -> sqlx::Result<FileRow> {
        self.flush(conn).await?;
        let lines = self.lines();
        query_file!(
            "update files set bytes = $2, line_count = $3 where file_id = $1 returning ",
            "",
            self.file_id,
            self.bytes,
            lines
        )
        .fetch_one(conn)
        .await
    }
}

find_team_row! { query_file, FileRow, " from files where file_id = $1 and team_id = $2" }

/// A page of the team's files, newest first (or oldest first with `ascending`), after the file
/// `after` in that order, optionally of one purpose.
pub async fn list(
    db: impl PgExecutor<'_>,
    team_id: &str,
    purpose: Option<&str>,
    after: Option<&str>,
    ascending: bool,
    limit: i64,
) -> sqlx::Result<Vec<FileRow>> {
    // Two statements rather than one with a dynamic ORDER BY: each keeps its index order.
    // `$after` compares the id with the cursor, `$order` follows `order by file_id`.
    macro_rules! page {
        ($after:literal, $order:literal) => {
            query_file!(
                "select ",
                " from files
             where team_id = $1 and ($2::text is null or purpose = $2) and ($3::text is null or file_id "
                    + $after
                    + " $3)
             order by file_id"
                    + $order
                    + " limit $4",
                team_id,
                purpose,
                after,
                limit
            )
            .fetch_all(db)
            .await
        };
    }
    if ascending {
        page!(">", "")
    } else {
        page!("<", " desc")
    }
}

/// Deletes the team's file and its content; false when there was no such file.
pub async fn delete(db: impl PgExecutor<'_>, team_id: &str, file_id: &str) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "delete from files where file_id = $1 and team_id = $2",
        file_id,
        team_id
    )
    .execute(db)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Chunk `seq` of a file's content, or `None` past its end. Read chunk by chunk, the content
/// streams with one chunk in memory.
pub async fn chunk(
    db: impl PgExecutor<'_>,
    file_id: &str,
    seq: i32,
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        "select data from file_chunks where file_id = $1 and seq = $2",
        file_id,
        seq
    )
    .fetch_optional(db)
    .await
}
