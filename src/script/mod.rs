//! The batch-script language (in progress).
