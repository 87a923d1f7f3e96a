//! archive-worker settings from `CHAT_*`.

use crate::config::{Common, ConfigError, MongoSettings, Settings, Strings};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ArchiveSettings {
    pub common: Common,
    pub mongodb: MongoSettings,
    /// This worker's consumer name in the group; unique per process.
    pub consumer: String,
    /// How long one `XREADGROUP` blocks; also bounds how fast SIGTERM is noticed.
    pub block: Duration,
}

impl ArchiveSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let mongodb = common.read_mongodb(&mut s, true);
        let consumer = s.opt("CHAT_ARCHIVE_CONSUMER").unwrap_or_else(|| {
            format!(
                "archive-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let block = s.duration("CHAT_ARCHIVE_BLOCK", Duration::from_secs(1));
        if block.is_zero() {
            s.error("CHAT_ARCHIVE_BLOCK: must be more than zero");
        }
        s.finish()?;
        // (A missing URL was reported by finish() already.)
        let mongodb = mongodb
            .ok_or_else(|| ConfigError::Invalid(vec!["CHAT_MONGODB_URL: required".into()]))?;
        Ok(Self {
            common,
            mongodb,
            consumer,
            block,
        })
    }
}
