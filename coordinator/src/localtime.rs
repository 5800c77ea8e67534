//! Local wall-clock time for what an operator reads at 3 a.m. (`cutover why`),
//! from the system's time zone database: `$TZ` (a zone name, a TZif path or a
//! POSIX rule such as `CET-1CEST,M3.5.0,M10.5.0/3`), else `/etc/localtime`.
//!
//! A TZif file (RFC 8536) is a list of transitions plus a POSIX rule for the
//! times after the last one; both are read here, without a dependency and
//! without unsafe code (libc's `localtime_r` would need both). Anything
//! unreadable is UTC, which is never wrong, only less convenient.

use std::path::Path;

/// Seconds since the epoch → (days since the epoch, seconds into the day).
fn split_day(secs: i64) -> (i64, i64) {
    (secs.div_euclid(86_400), secs.rem_euclid(86_400))
}

/// (year, month 1-12, day 1-31) of a day number (days since 1970-01-01,
/// proleptic Gregorian; Howard Hinnant's algorithm). Also dates SigV4
/// requests in [`crate::dns::route53`].
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Day number of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// An offset from UTC and its abbreviation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LocalType {
    /// Seconds east of UTC.
    offset: i64,
    abbr: String,
}

/// `Mm.w.d[/time]`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Change {
    month: u32,
    week: u32,
    weekday: u32,
    /// Local time of day of the change, seconds.
    at: i64,
}

impl Change {
    /// The change in `year`, seconds since the epoch, given the offset in force before it.
    fn instant(&self, year: i64, offset_before: i64) -> i64 {
        let first = days_from_civil(year, self.month, 1);
        let weekday_first = (first + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let mut day = 1 + (self.weekday + 7 - weekday_first) % 7 + 7 * (self.week - 1);
        let next_month = if self.month == 12 {
            days_from_civil(year + 1, 1, 1)
        } else {
            days_from_civil(year, self.month + 1, 1)
        };
        while i64::from(day) > next_month - first {
            day -= 7;
        }
        (first + i64::from(day) - 1) * 86_400 + self.at - offset_before
    }
}

/// The POSIX TZ rule in force after the last transition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    std: LocalType,
    dst: Option<(LocalType, Change, Change)>,
}

impl Rule {
    fn at(&self, secs: i64) -> &LocalType {
        let Some((dst, start, end)) = &self.dst else {
            return &self.std;
        };
        let (days, _) = split_day(secs + self.std.offset);
        let (year, _, _) = civil_from_days(days);
        let s = start.instant(year, self.std.offset);
        let e = end.instant(year, dst.offset);
        let in_dst = if s < e {
            secs >= s && secs < e
        } else {
            // Southern hemisphere: DST spans the new year.
            secs >= s || secs < e
        };
        if in_dst { dst } else { &self.std }
    }

    /// Parses `STD offset [DST [offset] [,start[/time],end[/time]]]`.
    fn parse(s: &str) -> Option<Self> {
        let mut p = Cursor { s: s.as_bytes() };
        let std_abbr = p.name()?;
        let std_offset = -p.offset()?;
        let std = LocalType {
            offset: std_offset,
            abbr: std_abbr,
        };
        if p.s.is_empty() {
            return Some(Self { std, dst: None });
        }
        let dst_abbr = p.name()?;
        let dst_offset = if p.s.first().is_some_and(|c| *c != b',') {
            -p.offset()?
        } else {
            std_offset + 3600
        };
        // Without a rule, POSIX leaves the dates to the implementation: use
        // the US rules, as glibc does.
        let (start, end) = if p.eat(b',') {
            let start = p.change()?;
            if !p.eat(b',') {
                return None;
            }
            (start, p.change()?)
        } else {
            (
                Change {
                    month: 3,
                    week: 2,
                    weekday: 0,
                    at: 7200,
                },
                Change {
                    month: 11,
                    week: 1,
                    weekday: 0,
                    at: 7200,
                },
            )
        };
        p.s.is_empty().then_some(Self {
            std,
            dst: Some((
                LocalType {
                    offset: dst_offset,
                    abbr: dst_abbr,
                },
                start,
                end,
            )),
        })
    }
}

struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn eat(&mut self, c: u8) -> bool {
        if self.s.first() == Some(&c) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Option<String> {
        let (name, rest) = if self.eat(b'<') {
            let end = self.s.iter().position(|c| *c == b'>')?;
            (&self.s[..end], &self.s[end + 1..])
        } else {
            let end = self
                .s
                .iter()
                .position(|c| !c.is_ascii_alphabetic())
                .unwrap_or(self.s.len());
            (&self.s[..end], &self.s[end..])
        };
        self.s = rest;
        (name.len() >= 3).then(|| String::from_utf8_lossy(name).into_owned())
    }

    fn number(&mut self) -> Option<i64> {
        let end = self
            .s
            .iter()
            .position(|c| !c.is_ascii_digit())
            .unwrap_or(self.s.len());
        let n = std::str::from_utf8(&self.s[..end]).ok()?.parse().ok()?;
        self.s = &self.s[end..];
        Some(n)
    }

    /// `[+-]hh[:mm[:ss]]` in seconds, as written (POSIX: west of UTC is positive).
    fn offset(&mut self) -> Option<i64> {
        let sign = if self.eat(b'-') {
            -1
        } else {
            self.eat(b'+');
            1
        };
        let mut secs = self.number()? * 3600;
        if self.eat(b':') {
            secs += self.number()? * 60;
            if self.eat(b':') {
                secs += self.number()?;
            }
        }
        Some(sign * secs)
    }

    fn change(&mut self) -> Option<Change> {
        if !self.eat(b'M') {
            return None; // `Jn` / `n` day-of-year rules: no zone in use needs them
        }
        let month = u32::try_from(self.number()?).ok()?;
        self.eat(b'.').then_some(())?;
        let week = u32::try_from(self.number()?).ok()?;
        self.eat(b'.').then_some(())?;
        let weekday = u32::try_from(self.number()?).ok()?;
        let at = if self.eat(b'/') { self.offset()? } else { 7200 };
        ((1..=12).contains(&month) && (1..=5).contains(&week) && weekday <= 6).then_some(Change {
            month,
            week,
            weekday,
            at,
        })
    }
}

/// A time zone: transitions, then a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    /// (transition time, index into `types`), ascending.
    transitions: Vec<(i64, usize)>,
    types: Vec<LocalType>,
    rule: Option<Rule>,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Self {
        Self::fixed(0, "UTC")
    }

    /// A fixed offset (seconds east of UTC) with its abbreviation.
    pub fn fixed(offset_secs: i64, abbr: &str) -> Self {
        Self {
            transitions: vec![],
            types: vec![LocalType {
                offset: offset_secs,
                abbr: abbr.to_string(),
            }],
            rule: None,
        }
    }

    /// A POSIX TZ rule such as `CET-1CEST,M3.5.0,M10.5.0/3`.
    pub fn posix(rule: &str) -> Option<Self> {
        Rule::parse(rule).map(|r| Self {
            transitions: vec![],
            types: vec![r.std.clone()],
            rule: Some(r),
        })
    }

    /// The zone of this machine: `$TZ`, else `/etc/localtime`, else UTC.
    pub fn local() -> Self {
        let tz = std::env::var("TZ").ok();
        match tz.as_deref().map(|t| t.trim_start_matches(':')) {
            None => Self::from_file(Path::new("/etc/localtime")),
            Some("") => Some(Self::utc()),
            Some(t) if t.starts_with('/') => Self::from_file(Path::new(t)),
            Some(t) => Self::from_file(&Path::new("/usr/share/zoneinfo").join(t))
                .or_else(|| Self::posix(t)),
        }
        .unwrap_or_else(Self::utc)
    }

    fn from_file(path: &Path) -> Option<Self> {
        Self::from_tzif(&std::fs::read(path).ok()?)
    }

    /// Parses a TZif file (versions 1 to 4).
    pub fn from_tzif(b: &[u8]) -> Option<Self> {
        fn be32(b: &[u8], at: usize) -> Option<i64> {
            Some(i64::from(i32::from_be_bytes(
                b.get(at..at + 4)?.try_into().ok()?,
            )))
        }
        fn be64(b: &[u8], at: usize) -> Option<i64> {
            Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
        }
        struct Header {
            isut: usize,
            isstd: usize,
            leap: usize,
            time: usize,
            typ: usize,
            chars: usize,
        }
        let header = |at: usize| -> Option<Header> {
            if b.get(at..at + 4)? != b"TZif" {
                return None;
            }
            let n = |i: usize| be32(b, at + 20 + 4 * i).map(|v| v as usize);
            Some(Header {
                isut: n(0)?,
                isstd: n(1)?,
                leap: n(2)?,
                time: n(3)?,
                typ: n(4)?,
                chars: n(5)?,
            })
        };
        let h1 = header(0)?;
        let version = *b.get(4)?;
        let block = |h: &Header, time_size: usize| {
            h.time * time_size
                + h.time
                + h.typ * 6
                + h.chars
                + h.leap * (time_size + 4)
                + h.isstd
                + h.isut
        };
        let (h, start, time_size) = if version >= b'2' {
            let second = 44 + block(&h1, 4);
            (header(second)?, second + 44, 8)
        } else {
            (h1, 44, 4)
        };
        let times_at = start;
        let idx_at = times_at + h.time * time_size;
        let types_at = idx_at + h.time;
        let chars_at = types_at + h.typ * 6;
        let chars = b.get(chars_at..chars_at + h.chars)?;
        let mut types = Vec::with_capacity(h.typ);
        for i in 0..h.typ {
            let at = types_at + 6 * i;
            let offset = be32(b, at)?;
            let ai = usize::from(*b.get(at + 5)?);
            let abbr = chars.get(ai..)?;
            let end = abbr.iter().position(|c| *c == 0).unwrap_or(abbr.len());
            types.push(LocalType {
                offset,
                abbr: String::from_utf8_lossy(&abbr[..end]).into_owned(),
            });
        }
        let mut transitions = Vec::with_capacity(h.time);
        for i in 0..h.time {
            let t = if time_size == 8 {
                be64(b, times_at + 8 * i)?
            } else {
                be32(b, times_at + 4 * i)?
            };
            let ti = usize::from(*b.get(idx_at + i)?);
            if ti >= types.len() {
                return None;
            }
            transitions.push((t, ti));
        }
        if types.is_empty() {
            return None;
        }
        let rule = if version >= b'2' {
            let footer = b.get(start + block(&h, 8)..)?;
            let text = String::from_utf8_lossy(footer);
            let line = text.trim_matches('\n');
            if line.is_empty() {
                None
            } else {
                Rule::parse(line)
            }
        } else {
            None
        };
        Some(Self {
            transitions,
            types,
            rule,
        })
    }

    fn at(&self, secs: i64) -> &LocalType {
        match self.transitions.partition_point(|(t, _)| *t <= secs) {
            // Before the first transition: the first type (RFC 8536 §3.2).
            0 => self
                .rule
                .as_ref()
                .filter(|_| self.transitions.is_empty())
                .map_or(&self.types[0], |r| r.at(secs)),
            n if n == self.transitions.len() => match &self.rule {
                Some(r) => r.at(secs),
                None => &self.types[self.transitions[n - 1].1],
            },
            n => &self.types[self.transitions[n - 1].1],
        }
    }

    fn parts(&self, unix_ms: i64) -> ((i64, u32, u32), i64, &str) {
        let secs = unix_ms.div_euclid(1000);
        let t = self.at(secs);
        let (days, rem) = split_day(secs + t.offset);
        (civil_from_days(days), rem, &t.abbr)
    }

    /// `03:12:07 CET`.
    pub fn clock(&self, unix_ms: i64) -> String {
        let (_, rem, abbr) = self.parts(unix_ms);
        format!(
            "{:02}:{:02}:{:02} {abbr}",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// `2026-11-27 03:12:07 CET`.
    pub fn datetime(&self, unix_ms: i64) -> String {
        let ((y, m, d), _, _) = self.parts(unix_ms);
        format!("{y:04}-{m:02}-{d:02} {}", self.clock(unix_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_round_trip() {
        for days in [-800_000, -1, 0, 1, 11_016, 20_784, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }

    #[test]
    fn a_posix_rule_switches_at_the_documented_instants() {
        let berlin = Zone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // 2026-03-29 01:00:00Z is when Europe/Berlin moves to CEST.
        let change = days_from_civil(2026, 3, 29) * 86_400_000 + 3_600_000;
        assert_eq!(berlin.clock(change - 1000), "01:59:59 CET");
        assert_eq!(berlin.clock(change), "03:00:00 CEST");
        // 2026-10-25 01:00:00Z back to CET.
        let back = days_from_civil(2026, 10, 25) * 86_400_000 + 3_600_000;
        assert_eq!(berlin.clock(back - 1000), "02:59:59 CEST");
        assert_eq!(berlin.clock(back), "02:00:00 CET");
        assert_eq!(
            berlin.datetime(1_795_770_245_000),
            "2026-11-27 10:04:05 CET"
        );
        // Southern hemisphere: DST over the new year.
        let sydney = Zone::posix("AEST-10AEDT,M10.1.0,M4.1.0/3").unwrap();
        assert_eq!(
            sydney.clock(days_from_civil(2026, 1, 15) * 86_400_000),
            "11:00:00 AEDT"
        );
        assert_eq!(
            sydney.clock(days_from_civil(2026, 7, 15) * 86_400_000),
            "10:00:00 AEST"
        );
        let kolkata = Zone::posix("IST-5:30").unwrap();
        assert_eq!(kolkata.clock(0), "05:30:00 IST");
        assert!(Zone::posix("nonsense,,").is_none());
    }

    #[test]
    fn the_systems_tzif_files_read_like_their_rules() {
        let Some(berlin) = Zone::from_file(Path::new("/usr/share/zoneinfo/Europe/Berlin")) else {
            eprintln!("no tzdata here; skipping");
            return;
        };
        let rule = Zone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap();
        // Covered by transitions (2000) and by the footer rule (2040).
        for y in [2000, 2026, 2040] {
            for (m, d) in [(1, 10), (3, 29), (7, 1), (10, 25), (12, 31)] {
                for h in [0, 1, 2, 3] {
                    let t = (days_from_civil(y, m, d) * 86_400 + h * 3600) * 1000;
                    assert_eq!(berlin.datetime(t), rule.datetime(t), "{y}-{m}-{d} {h}h");
                }
            }
        }
        if let Some(utc) = Zone::from_file(Path::new("/usr/share/zoneinfo/Etc/UTC")) {
            assert_eq!(utc.clock(1_795_770_245_000), "09:04:05 UTC");
        }
    }
}
