//! [`NoteError`]: why the note store could not open, read or change a note.

/// Why the note store could not open, read or change a note.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// A journal file or the folder could not be read, written or synced.
    #[error("note store: {0}")]
    Io(#[from] std::io::Error),
    /// A write or flush failed earlier (or now): the store refuses every further write.
    #[error("note store stopped after a failed write; restart the gateway: {0}")]
    Failed(String),
    /// A journal file is damaged other than by a write cut short, a record or sealed part
    /// does not decode, or the folder holds the earlier (sled) format.
    #[error("note store holds an unreadable note: {0}")]
    Corrupt(String),
    /// A sealed part could not be opened (its key is not in the keyring, or it does not
    /// authenticate) or sealed.
    #[error("a note's sealed part: {0}")]
    Seal(String),
    /// The store holds no note with that id (never stored, or forgotten), or its body is
    /// purged.
    #[error("no such note")]
    NotFound,
    /// The change needs a deliverable note (in the inbox) and the note is not.
    #[error("the note is {0}, not in the inbox")]
    NotDeliverable(&'static str),
}
