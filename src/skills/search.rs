//! Ranked full-text search over one user's skills: BM25F over three fields, the name, the
//! description and the `SKILL.md` body, the name and description weighted above the body.
//!
//! Text is split into terms by the `bm25` crate's default tokenizer (Unicode words, folded to
//! ASCII and lower case, English stop words left out, Snowball stemming), so "filling PDF forms"
//! finds a skill that "fills a PDF form". The scoring is written here rather than taken from the
//! crate: its `SearchEngine` and `Scorer` score one text per document, and a skill is three texts
//! whose terms count differently (a word of the name says more about the skill than the same word
//! deep in its instructions). BM25F (Robertson and Zaragoza's simple form) weights each field's
//! term frequency, normalized by that field's length, before the one saturation of BM25.
//!
//! Beside the terms, [`SearchIndex::found`] also finds the skills whose name or description
//! contains the query as typed (a part of a word, which whole terms miss), from every name and
//! lower-cased description kept one after another in one text, searched once per query.
//!
//! A [`SearchIndex`] is immutable, like the skill index it sits beside: [`SearchIndex::updated`]
//! makes the next one from the previous, tokenizing only the skills whose text changed, so an
//! upload of one skill among hundreds costs one skill's tokenization and a shallow copy of the
//! rest. Each term has a posting list (the skills holding it, with their counts per field), shared
//! between indexes until a skill holding the term changes, so a query reads only its own terms'
//! lists and hashes only its own terms: a query of a few words over hundreds of skills takes a few
//! microseconds, and grows with the skills that hold its terms, not with all the user has.
//!
//! ```
//! use agentskills_mcp::skills::search::{SearchIndex, SearchText};
//! let id = uuid::Uuid::from_u128(1);
//! let skill = SearchText { id, name: "pdf-forms", description: "Fill PDF forms.", body: "", version: "v1" };
//! let index = SearchIndex::default().updated([skill]);
//! assert_eq!(index.search("filling a form", |_| true).first().map(|hit| hit.id), Some(id));
//! let (found, total) = index.found("PDF-F", |_| true, 10);
//! assert_eq!((found[0].id, found[0].name_contains, total), (id, true, 1));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bm25::{DefaultTokenizer, Tokenizer};
use uuid::Uuid;

/// The fields, in the order of every per-field array here.
const FIELDS: usize = 3;
const NAME: usize = 0;
const DESCRIPTION: usize = 1;
const BODY: usize = 2;

/// How much a term counts in each field. A name is a few words chosen to say what the skill is,
/// a description a sentence or two meant for exactly this choice (the agent picks skills by it),
/// the body a long text that mentions much in passing.
const WEIGHTS: [f32; FIELDS] = [3.0, 2.0, 1.0];
/// How much each field's length normalizes its counts: names are all short, so their length says
/// little; descriptions and bodies vary, and a long body mentions more words by length alone.
const LENGTH_NORMALIZATION: [f32; FIELDS] = [0.3, 0.75, 0.75];
/// BM25's saturation: the second occurrence of a term adds less than the first.
const K1: f32 = 1.2;

/// The bytes of a body that are indexed: the instructions' opening, where a skill says what it is
/// for. It bounds an update's work and memory however large a `SKILL.md` is.
const MAX_BODY_BYTES: usize = 64 * 1024;

static TOKENIZER: LazyLock<DefaultTokenizer> = LazyLock::new(DefaultTokenizer::default);

/// The terms of `text`, as documents and queries are both split.
pub fn terms(text: &str) -> Vec<String> {
    TOKENIZER.tokenize(text)
}

/// One skill's text, as the index is given it.
#[derive(Debug, Clone, Copy)]
pub struct SearchText<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub description: &'a str,
    /// `SKILL.md` after its front matter (or all of it: see [`body`]).
    pub body: &'a str,
    /// What changes whenever the text does (the skill's files digest): a skill whose version is
    /// the same as in the previous index is not tokenized again.
    pub version: &'a str,
}

/// The part of a `SKILL.md` after its front matter (which holds the name and description, indexed
/// as fields of their own), or the whole text when it has none.
pub fn body(skill_md: &str) -> &str {
    let Some(rest) = skill_md
        .strip_prefix("---\n")
        .or_else(|| skill_md.strip_prefix("---\r\n"))
    else {
        return skill_md;
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        offset += line.len();
        if line.trim_end() == "---" {
            return &rest[offset..];
        }
    }
    skill_md
}

/// One skill as the index holds it: what tells whether its text changed, what the substring match
/// reads, and its terms and lengths, to take it out of the postings and totals when it goes.
#[derive(Debug)]
struct Document {
    id: Uuid,
    name: String,
    description: String,
    /// `description` in lower case, as the substring match compares it.
    lowercase_description: String,
    version: String,
    /// Its distinct terms.
    terms: Box<[String]>,
    /// Each field's length in terms.
    lengths: [u32; FIELDS],
}

impl Document {
    fn is_text_of(&self, text: &SearchText<'_>) -> bool {
        self.version == text.version
            && self.name == text.name
            && self.description == text.description
    }
}

/// A skill's counts of one term, in that term's posting list.
#[derive(Debug, Clone, Copy)]
struct Posting {
    /// The skill's slot in [`SearchIndex::slots`].
    slot: usize,
    /// How often the term occurs in each field.
    counts: [u32; FIELDS],
    /// The skill's field lengths, repeated in each of its postings so that scoring a term reads
    /// its list and nothing else.
    lengths: [u32; FIELDS],
}

/// Per term, how often it occurs in each field of `text`, and each field's length in terms.
fn tokenize(text: &SearchText<'_>) -> (HashMap<String, [u32; FIELDS]>, [u32; FIELDS]) {
    let mut body = text.body;
    if body.len() > MAX_BODY_BYTES {
        let mut end = MAX_BODY_BYTES;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body = &body[..end];
    }
    let mut counts: HashMap<String, [u32; FIELDS]> = HashMap::new();
    let mut lengths = [0; FIELDS];
    for (field, field_text) in [
        (NAME, text.name),
        (DESCRIPTION, text.description),
        (BODY, body),
    ] {
        for term in terms(field_text) {
            counts.entry(term).or_default()[field] += 1;
            lengths[field] += 1;
        }
    }
    (counts, lengths)
}

/// One skill a query found, and how well it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
}

/// One skill [`SearchIndex::found`] found: by its terms (`score` above 0), or because its name or
/// description contains the query as typed, or both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Found<'a> {
    pub id: Uuid,
    /// The skill's name as the index was given it.
    pub name: &'a str,
    /// Whether the name contains the query as typed (in lower case).
    pub name_contains: bool,
    /// The terms' score; 0 when no term of the query occurs in the skill.
    pub score: f32,
}

impl Found<'_> {
    /// The order of [`SearchIndex::found`]: names containing the query first (someone typing a
    /// name means that skill), then by score, then by name.
    fn before(&self, other: &Found<'_>) -> std::cmp::Ordering {
        other
            .name_contains
            .cmp(&self.name_contains)
            .then_with(|| other.score.total_cmp(&self.score))
            .then_with(|| self.name.cmp(other.name))
    }
}

/// The names and lower-cased descriptions of every skill, one after another, each followed by a
/// NUL byte: what the substring match searches, in one pass per query.
#[derive(Debug, Default, Clone)]
struct Texts {
    text: String,
    /// In the order of `text`.
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    /// Where the piece's NUL is in [`Texts::text`].
    end: usize,
    slot: usize,
    is_name: bool,
}

/// What the substring match found in a slot's skill.
const NAME_CONTAINS: u8 = 1;
const DESCRIPTION_CONTAINS: u8 = 2;

impl Texts {
    fn of(slots: &[Option<Arc<Document>>]) -> Texts {
        let mut texts = Texts::default();
        for (slot, document) in slots.iter().enumerate() {
            let Some(document) = document else {
                continue;
            };
            for (piece, is_name) in [
                (&document.name, true),
                (&document.lowercase_description, false),
            ] {
                texts.text.push_str(piece);
                texts.pieces.push(Piece {
                    end: texts.text.len(),
                    slot,
                    is_name,
                });
                texts.text.push('\0');
            }
        }
        texts
    }

    /// Per slot, [`NAME_CONTAINS`] and [`DESCRIPTION_CONTAINS`] where the name or the lower-cased
    /// description contains `needle`.
    fn containing(&self, needle: &str, slots: usize) -> Vec<u8> {
        let mut found = vec![0u8; slots];
        if needle.is_empty() {
            return found;
        }
        let mut mark = |piece: &Piece| {
            if let Some(flags) = found.get_mut(piece.slot) {
                *flags |= if piece.is_name {
                    NAME_CONTAINS
                } else {
                    DESCRIPTION_CONTAINS
                };
            }
        };
        if needle.contains('\0') {
            // A match could run from one piece into the next: each piece by itself.
            let mut start = 0;
            for piece in &self.pieces {
                if self.text[start..piece.end].contains(needle) {
                    mark(piece);
                }
                start = piece.end + 1;
            }
            return found;
        }
        // Without a NUL in it, a match lies within one piece; after one, the search goes on
        // from the next piece.
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let text = self.text.as_bytes();
        let mut from = 0;
        while let Some(at) = text.get(from..).and_then(|rest| finder.find(rest)) {
            let at = from + at;
            let Some(piece) = self.pieces.get(self.pieces.partition_point(|p| p.end < at)) else {
                break;
            };
            mark(piece);
            from = piece.end + 1;
        }
        found
    }
}

/// The search index of one user's skills.
#[derive(Debug, Default, Clone)]
pub struct SearchIndex {
    /// The skills by slot, the number postings name them by. A slot left by a skill that is gone
    /// is empty until a new skill takes it.
    slots: Vec<Option<Arc<Document>>>,
    /// Each skill's slot.
    slot_of: HashMap<Uuid, usize>,
    /// Per term, the skills holding it (in any field), by slot. A list is copied only when a
    /// skill holding its term changes; the others are shared with the previous index.
    postings: HashMap<Arc<str>, Arc<Vec<Posting>>>,
    /// The sum of each field's lengths over all skills.
    total_lengths: [u64; FIELDS],
    texts: Texts,
}

/// What an update did, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Skills tokenized (new, or their text changed).
    pub tokenized: usize,
    /// Skills kept from the previous index as they were.
    pub kept: usize,
    /// Skills gone since the previous index.
    pub removed: usize,
}

impl SearchIndex {
    /// The index of `skills` (every skill the user has, each once), made from this one: a skill
    /// whose text is unchanged keeps its counts, the others are tokenized, skills not given are
    /// dropped. A skill given twice is indexed as first given.
    pub fn updated<'a>(&self, skills: impl IntoIterator<Item = SearchText<'a>>) -> SearchIndex {
        self.updated_with_stats(skills).0
    }

    /// [`SearchIndex::updated`], and what it did.
    pub fn updated_with_stats<'a>(
        &self,
        skills: impl IntoIterator<Item = SearchText<'a>>,
    ) -> (SearchIndex, UpdateStats) {
        let mut next = SearchIndex {
            slots: self.slots.clone(),
            slot_of: HashMap::with_capacity(self.slot_of.len()),
            postings: self.postings.clone(),
            total_lengths: self.total_lengths,
            texts: Texts::default(),
        };
        let mut stats = UpdateStats::default();
        let mut kept = vec![false; self.slots.len()];
        let mut changed = Vec::new();
        for text in skills {
            if next.slot_of.contains_key(&text.id) {
                continue;
            }
            let old = self
                .slot_of
                .get(&text.id)
                .and_then(|&slot| Some((slot, self.slots.get(slot)?.as_ref()?)));
            match old {
                Some((slot, old)) if old.is_text_of(&text) => {
                    stats.kept += 1;
                    kept[slot] = true;
                    next.slot_of.insert(text.id, slot);
                }
                _ => {
                    stats.tokenized += 1;
                    // Its slot is chosen once the skills that are gone or changed have left theirs.
                    next.slot_of.insert(text.id, usize::MAX);
                    changed.push(text);
                }
            }
        }
        // What the previous index held and this one does not hold as it was (gone, or replaced
        // by a new text) comes out of the postings and totals, and what was tokenized goes in.
        for (slot, old) in self.slots.iter().enumerate() {
            let Some(old) = old else {
                continue;
            };
            if kept.get(slot).copied().unwrap_or(false) {
                continue;
            }
            if !next.slot_of.contains_key(&old.id) {
                stats.removed += 1;
            }
            next.remove(slot, old);
        }
        let mut free = next
            .slots
            .iter()
            .enumerate()
            .filter(|(_, document)| document.is_none())
            .map(|(slot, _)| slot)
            .collect::<Vec<_>>()
            .into_iter();
        for text in changed {
            let slot = free.next().unwrap_or(next.slots.len());
            next.add(slot, &text);
        }
        while next.slots.last().is_some_and(Option::is_none) {
            next.slots.pop();
        }
        next.texts = Texts::of(&next.slots);
        (next, stats)
    }

    /// Takes the skill in `slot` out of the postings and totals, and leaves its slot empty.
    fn remove(&mut self, slot: usize, document: &Document) {
        if let Some(place) = self.slots.get_mut(slot) {
            *place = None;
        }
        for (total, length) in self.total_lengths.iter_mut().zip(document.lengths) {
            *total = total.saturating_sub(u64::from(length));
        }
        for term in &document.terms {
            let Some(list) = self.postings.get_mut(term.as_str()) else {
                continue;
            };
            let list = Arc::make_mut(list);
            if let Ok(at) = list.binary_search_by_key(&slot, |p| p.slot) {
                list.remove(at);
            }
            if list.is_empty() {
                self.postings.remove(term.as_str());
            }
        }
    }

    /// Tokenizes `text` into `slot` (an empty one, or the next after the last).
    fn add(&mut self, slot: usize, text: &SearchText<'_>) {
        let (counts, lengths) = tokenize(text);
        let mut terms = Vec::with_capacity(counts.len());
        for (term, counts) in counts {
            let posting = Posting {
                slot,
                counts,
                lengths,
            };
            match self.postings.get_mut(term.as_str()) {
                Some(list) => {
                    let list = Arc::make_mut(list);
                    let at = list.partition_point(|p| p.slot < slot);
                    list.insert(at, posting);
                }
                None => {
                    self.postings
                        .insert(Arc::from(term.as_str()), Arc::new(vec![posting]));
                }
            }
            terms.push(term);
        }
        for (total, length) in self.total_lengths.iter_mut().zip(lengths) {
            *total = total.saturating_add(u64::from(length));
        }
        let document = Arc::new(Document {
            id: text.id,
            name: text.name.to_owned(),
            description: text.description.to_owned(),
            lowercase_description: text.description.to_lowercase(),
            version: text.version.to_owned(),
            terms: terms.into_boxed_slice(),
            lengths,
        });
        if slot >= self.slots.len() {
            self.slots.resize(slot + 1, None);
        }
        self.slots[slot] = Some(document);
        self.slot_of.insert(text.id, slot);
    }

    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// Per term, in how many skills it occurs (in any field).
    #[cfg(test)]
    fn skills_with(&self) -> std::collections::BTreeMap<String, usize> {
        self.postings
            .iter()
            .map(|(term, list)| (term.to_string(), list.len()))
            .collect()
    }

    /// The skills that match `query` (at least one of its terms) among those `wanted` keeps, best
    /// first; equal scores in no particular order (callers break ties).
    pub fn search(&self, query: &str, wanted: impl Fn(Uuid) -> bool) -> Vec<Hit> {
        let Some(scores) = self.scores(query) else {
            return Vec::new();
        };
        let mut hits: Vec<Hit> = (0..self.slots.len())
            .filter(|&slot| scores[slot] > 0.0)
            .filter_map(|slot| Some((slot, self.slots[slot].as_deref()?)))
            .filter(|(_, document)| wanted(document.id))
            .map(|(slot, document)| Hit {
                id: document.id,
                score: scores[slot],
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
    }

    /// The skills `wanted` keeps that match `query`: those [`SearchIndex::search`] finds, and
    /// those whose name or description contains `query` as typed (trimmed, in lower case: the
    /// substring filter of earlier releases). The first `limit` in their order (names containing
    /// the query first, then by score, then by name), and how many match in all.
    pub fn found(
        &self,
        query: &str,
        wanted: impl Fn(Uuid) -> bool,
        limit: usize,
    ) -> (Vec<Found<'_>>, usize) {
        let scores = self.scores(query);
        let score = |slot: usize| scores.as_ref().map_or(0.0, |scores| scores[slot]);
        let needle = query.trim().to_lowercase();
        let contains = self.texts.containing(&needle, self.slots.len());
        // The slots first: only a match's document is read.
        let mut found: Vec<Found<'_>> = (0..self.slots.len())
            .filter(|&slot| contains[slot] != 0 || score(slot) > 0.0)
            .filter_map(|slot| Some((slot, self.slots[slot].as_deref()?)))
            .filter(|(_, document)| wanted(document.id))
            .map(|(slot, document)| Found {
                id: document.id,
                name: &document.name,
                name_contains: contains[slot] & NAME_CONTAINS != 0,
                score: score(slot),
            })
            .collect();
        let total = found.len();
        if limit < total {
            if limit == 0 {
                return (Vec::new(), total);
            }
            found.select_nth_unstable_by(limit - 1, Found::before);
            found.truncate(limit);
        }
        // The order is total (names are unique): the first `limit` are the same however found.
        found.sort_unstable_by(Found::before);
        (found, total)
    }

    /// Each slot's score for `query` (0 where none of its terms occurs), or `None` when no skill
    /// holds any of them. BM25F: per term, the fields' counts weighted and normalized by their
    /// length, summed, then saturated once and scaled by the term's idf; the terms in order.
    fn scores(&self, query: &str) -> Option<Vec<f32>> {
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        // Each term's weight: rare terms say more (BM25's idf, never negative).
        let skills = self.slot_of.len() as f32;
        let weighted: Vec<(&[Posting], f32)> = query_terms
            .iter()
            .filter_map(|term| {
                let postings = self.postings.get(term.as_str())?;
                let with = postings.len() as f32;
                let idf = (1.0 + (skills - with + 0.5) / (with + 0.5)).ln();
                Some((postings.as_slice(), idf))
            })
            .collect();
        if weighted.is_empty() {
            return None;
        }
        let average = self
            .total_lengths
            .map(|total| (total as f32 / skills.max(1.0)).max(1.0));
        let mut scores = vec![0.0f32; self.slots.len()];
        for (postings, idf) in weighted {
            for posting in postings {
                let mut frequency = 0.0;
                for field in 0..FIELDS {
                    if posting.counts[field] == 0 {
                        continue;
                    }
                    let b = LENGTH_NORMALIZATION[field];
                    let norm = 1.0 - b + b * posting.lengths[field] as f32 / average[field];
                    frequency += WEIGHTS[field] * posting.counts[field] as f32 / norm;
                }
                if let Some(score) = scores.get_mut(posting.slot) {
                    *score += idf * frequency / (K1 + frequency);
                }
            }
        }
        Some(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text<'a>(n: u128, name: &'a str, description: &'a str, body: &'a str) -> SearchText<'a> {
        SearchText {
            id: Uuid::from_u128(n),
            name,
            description,
            body,
            version: "v1",
        }
    }

    fn ids(hits: &[Hit]) -> Vec<u128> {
        hits.iter().map(|h| h.id.as_u128()).collect()
    }

    fn corpus() -> Vec<SearchText<'static>> {
        vec![
            text(
                1,
                "pdf-forms",
                "Fill and flatten PDF forms.",
                "Use pdftk to fill form fields.",
            ),
            text(
                2,
                "csv-cleaner",
                "Clean CSV files: dedupe rows, fix encodings.",
                "Mentions pdf once.",
            ),
            text(
                3,
                "release-notes",
                "Write release notes from git history.",
                "Group commits by type.",
            ),
            text(
                4,
                "meeting-minutes",
                "Summarize a meeting transcript into minutes.",
                "Keep decisions and action items; a pdf export is optional, pdf pdf.",
            ),
        ]
    }

    #[test]
    fn stemmed_words_find_the_skill_and_stop_words_are_ignored() {
        let index = SearchIndex::default().updated(corpus());
        assert_eq!(ids(&index.search("filling the forms", |_| true))[0], 1);
        assert_eq!(ids(&index.search("summarizing meetings", |_| true))[0], 4);
        assert!(index.search("the and of", |_| true).is_empty());
        assert!(index.search("", |_| true).is_empty());
        assert!(index.search("kubernetes", |_| true).is_empty());
    }

    #[test]
    fn the_name_and_description_count_above_the_body() {
        let index = SearchIndex::default().updated(corpus());
        // "pdf" is in 1's name and description, and only in the bodies of 2 and 4 (in 4's three
        // times): 1 comes first.
        let hits = index.search("pdf", |_| true);
        assert_eq!(ids(&hits)[0], 1);
        assert_eq!(hits.len(), 3);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }

    #[test]
    fn the_filter_leaves_skills_out() {
        let index = SearchIndex::default().updated(corpus());
        let hits = index.search("pdf", |id| id != Uuid::from_u128(1));
        assert!(!ids(&hits).contains(&1));
    }

    #[test]
    fn an_update_tokenizes_only_what_changed_and_keeps_the_totals_right() {
        let first = SearchIndex::default().updated(corpus());
        let mut changed = corpus();
        changed[1] = SearchText {
            description: "Clean spreadsheets.",
            version: "v2",
            ..changed[1]
        };
        changed.remove(2);
        changed.push(text(
            5,
            "kubernetes-deploy",
            "Deploy to Kubernetes.",
            "kubectl apply",
        ));
        let (next, stats) = first.updated_with_stats(changed.clone());
        assert_eq!(
            stats,
            UpdateStats {
                tokenized: 2,
                kept: 2,
                removed: 1
            }
        );
        // The same as an index made from nothing.
        let fresh = SearchIndex::default().updated(changed);
        assert_eq!(next.skills_with(), fresh.skills_with());
        assert_eq!(next.total_lengths, fresh.total_lengths);
        assert_eq!(ids(&next.search("kubernetes", |_| true)), vec![5]);
        assert!(next.search("release", |_| true).is_empty());
        assert_eq!(ids(&next.search("spreadsheets", |_| true)), vec![2]);
        // The previous index is as it was.
        assert_eq!(ids(&first.search("release", |_| true)), vec![3]);
        // Nothing given: nothing left.
        let empty = next.updated([]);
        assert!(empty.is_empty() && empty.skills_with().is_empty());
        assert!(empty.slots.is_empty() && empty.texts.text.is_empty());
        assert_eq!(empty.total_lengths, [0; FIELDS]);
    }

    /// The scores as the index computed them before it had posting lists: every skill's counts
    /// scanned, term by term in order. The index must give the same, to the bit.
    fn scanned_scores(texts: &[SearchText<'_>], query: &str) -> Vec<(u128, f32)> {
        let documents: Vec<_> = texts.iter().map(|t| (t.id, tokenize(t))).collect();
        let mut skills_with: HashMap<&str, u32> = HashMap::new();
        let mut total = [0u64; FIELDS];
        for (_, (counts, lengths)) in &documents {
            for term in counts.keys() {
                *skills_with.entry(term).or_default() += 1;
            }
            for field in 0..FIELDS {
                total[field] += u64::from(lengths[field]);
            }
        }
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        let skills = documents.len() as f32;
        let weighted: Vec<(&str, f32)> = query_terms
            .iter()
            .filter_map(|term| {
                let with = *skills_with.get(term.as_str())? as f32;
                Some((
                    term.as_str(),
                    (1.0 + (skills - with + 0.5) / (with + 0.5)).ln(),
                ))
            })
            .collect();
        let average = total.map(|total| (total as f32 / skills.max(1.0)).max(1.0));
        let mut scores = Vec::new();
        for (id, (counts, lengths)) in &documents {
            let mut score = 0.0;
            for (term, idf) in &weighted {
                let Some(counts) = counts.get(*term) else {
                    continue;
                };
                let mut frequency = 0.0;
                for field in 0..FIELDS {
                    if counts[field] == 0 {
                        continue;
                    }
                    let b = LENGTH_NORMALIZATION[field];
                    let norm = 1.0 - b + b * lengths[field] as f32 / average[field];
                    frequency += WEIGHTS[field] * counts[field] as f32 / norm;
                }
                score += idf * frequency / (K1 + frequency);
            }
            if score > 0.0 {
                scores.push((id.as_u128(), score));
            }
        }
        scores.sort_by_key(|(id, _)| *id);
        scores
    }

    fn index_scores(index: &SearchIndex, query: &str) -> Vec<(u128, f32)> {
        let mut scores: Vec<_> = index
            .search(query, |_| true)
            .iter()
            .map(|hit| (hit.id.as_u128(), hit.score))
            .collect();
        scores.sort_by_key(|(id, _)| *id);
        scores
    }

    const QUERIES: [&str; 8] = [
        "pdf",
        "fill the pdf forms",
        "release notes from git",
        "meeting pdf export minutes",
        "clean csv spreadsheets",
        "kubernetes deploy",
        "nothing here",
        "pdf pdf form fields type",
    ];

    #[test]
    fn posting_lists_score_as_the_scan_did_through_updates() {
        let mut texts = corpus();
        let mut index = SearchIndex::default().updated(texts.clone());
        let check = |index: &SearchIndex, texts: &[SearchText<'_>]| {
            for query in QUERIES {
                assert_eq!(
                    index_scores(index, query),
                    scanned_scores(texts, query),
                    "{query}"
                );
            }
        };
        check(&index, &texts);
        // A skill changed, one removed (its slot taken by the next new one), two added.
        texts[1] = SearchText {
            body: "Now about pdf forms too.",
            version: "v2",
            ..texts[1]
        };
        texts.remove(0);
        texts.push(text(
            5,
            "kubernetes-deploy",
            "Deploy to Kubernetes.",
            "kubectl apply",
        ));
        texts.push(text(6, "pdf-merge", "Merge PDF files.", "Type pdfunite."));
        index = index.updated(texts.clone());
        check(&index, &texts);
        let fresh = SearchIndex::default().updated(texts.clone());
        assert_eq!(index.skills_with(), fresh.skills_with());
        assert_eq!(index.total_lengths, fresh.total_lengths);
        // The last ones removed: no slot is left empty at the end.
        texts.truncate(2);
        index = index.updated(texts.clone());
        check(&index, &texts);
        assert_eq!(index.slots.iter().flatten().count(), 2);
        assert!(index.slots.last().is_some_and(Option::is_some));
    }

    #[test]
    fn found_orders_names_first_then_by_score_then_by_name() {
        let mut texts = corpus();
        texts.push(text(5, "pdf-merge", "Merge PDF files.", ""));
        texts.push(text(6, "zip", "Compress a PDF.", ""));
        texts.push(text(7, "aardvark", "Compress a PDF.", ""));
        let index = SearchIndex::default().updated(texts);
        let (found, total) = index.found("pdf", |_| true, usize::MAX);
        let order: Vec<(&str, bool)> = found.iter().map(|f| (f.name, f.name_contains)).collect();
        assert_eq!(total, found.len());
        // The two names with "pdf" first (the one with the shorter text scores higher); then the
        // others, by score, equal ones by name.
        assert_eq!(&order[..2], [("pdf-merge", true), ("pdf-forms", true)]);
        assert!(found[0].score > found[1].score);
        assert!(order[2..].iter().all(|(_, in_name)| !in_name));
        assert!(found.windows(2).skip(2).all(|w| w[0].score >= w[1].score));
        let aardvark = order.iter().position(|(name, _)| *name == "aardvark");
        let zip = order.iter().position(|(name, _)| *name == "zip");
        assert!(aardvark < zip, "{order:?}");
        // The first few are the first few of the whole order.
        for limit in 0..=found.len() + 1 {
            let (first, all) = index.found("pdf", |_| true, limit);
            assert_eq!(all, total);
            assert_eq!(first, found[..limit.min(found.len())]);
        }
        // Left out by the filter: neither listed nor counted.
        let (without, total) = index.found("pdf", |id| id != Uuid::from_u128(1), usize::MAX);
        assert_eq!(total, found.len() - 1);
        assert!(without.iter().all(|f| f.id != Uuid::from_u128(1)));
    }

    #[test]
    fn found_finds_parts_of_words_in_names_and_descriptions() {
        let mut texts = corpus();
        texts.push(text(5, "zeta", "Multi\nline \u{0}descr, ÉTÉ.", ""));
        let index = SearchIndex::default().updated(texts);
        let names = |query: &str| -> Vec<(String, bool)> {
            let (found, _) = index.found(query, |_| true, usize::MAX);
            found
                .iter()
                .map(|f| (f.name.to_owned(), f.name_contains))
                .collect()
        };
        let zeta = || vec![("zeta".to_owned(), false)];
        // A part of a word: no term, found as typed, case aside.
        assert_eq!(names("  LEAN  "), [("csv-cleaner".to_owned(), true)]);
        assert_eq!(names("flatte"), [("pdf-forms".to_owned(), false)]);
        assert_eq!(names("ét"), zeta());
        let (found, _) = index.found("ét", |_| true, 1);
        assert_eq!(found[0].score, 0.0);
        // Across a line break of the description (as typed), across a NUL (each piece alone),
        // and never from one skill's text into the next one's.
        assert_eq!(names("ulti\nlin"), zeta());
        assert_eq!(names("ne \u{0}des"), zeta());
        assert_eq!(names("\u{0}"), zeta());
        let none = |needle: &str| {
            let found = index.texts.containing(needle, index.slots.len());
            found.iter().all(|&flags| flags == 0)
        };
        assert!(none("forms.\u{0}csv") && none("forms.csv") && none("minuteszeta"));
        assert!(!none("forms.") && !none("csv"));
        assert!(names("").is_empty());
    }

    #[test]
    fn the_body_is_what_follows_the_front_matter() {
        assert_eq!(
            body("---\nname: a\ndescription: b\n---\nText.\n"),
            "Text.\n"
        );
        assert_eq!(body("---\r\nname: a\r\n---\r\nText."), "Text.");
        assert_eq!(body("No front matter."), "No front matter.");
        assert_eq!(body("---\nunclosed"), "---\nunclosed");
    }

    #[test]
    fn a_huge_body_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_BODY_BYTES);
        let index = SearchIndex::default().updated([text(1, "long", "Long.", &long)]);
        assert_eq!(index.len(), 1);
    }
}
