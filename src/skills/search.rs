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
//! A [`SearchIndex`] is immutable, like the skill index it sits beside: [`SearchIndex::updated`]
//! makes the next one from the previous, tokenizing only the skills whose text changed, so an
//! upload of one skill among hundreds costs one skill's tokenization and a copy of the term
//! counts. A query scans the skills that hold at least one of its terms' counts (a user has
//! hundreds of skills, not millions: no posting lists are needed to answer in microseconds).
//!
//! ```
//! use agentskills_mcp::skills::search::{SearchIndex, SearchText};
//! let id = uuid::Uuid::from_u128(1);
//! let skill = SearchText { id, name: "pdf-forms", description: "Fill PDF forms.", body: "", version: "v1" };
//! let index = SearchIndex::default().updated([skill]);
//! assert_eq!(index.search("filling a form", |_| true).first().map(|hit| hit.id), Some(id));
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

/// One skill's term counts.
#[derive(Debug)]
struct Document {
    name: String,
    description: String,
    version: String,
    /// Per term, how often it occurs in each field.
    counts: HashMap<String, [u32; FIELDS]>,
    /// Each field's length in terms.
    lengths: [u32; FIELDS],
}

impl Document {
    fn new(text: &SearchText<'_>) -> Document {
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
        Document {
            name: text.name.to_owned(),
            description: text.description.to_owned(),
            version: text.version.to_owned(),
            counts,
            lengths,
        }
    }

    fn is_text_of(&self, text: &SearchText<'_>) -> bool {
        self.version == text.version
            && self.name == text.name
            && self.description == text.description
    }
}

/// One skill a query found, and how well it matches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    pub score: f32,
}

/// The search index of one user's skills.
#[derive(Debug, Default, Clone)]
pub struct SearchIndex {
    documents: HashMap<Uuid, Arc<Document>>,
    /// Per term, in how many skills it occurs (in any field).
    skills_with: HashMap<String, u32>,
    /// The sum of each field's lengths over all skills.
    total_lengths: [u64; FIELDS],
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
    /// The index of `skills` (every skill the user has), made from this one: a skill whose text
    /// is unchanged keeps its counts, the others are tokenized, skills not given are dropped.
    pub fn updated<'a>(&self, skills: impl IntoIterator<Item = SearchText<'a>>) -> SearchIndex {
        self.updated_with_stats(skills).0
    }

    /// [`SearchIndex::updated`], and what it did.
    pub fn updated_with_stats<'a>(
        &self,
        skills: impl IntoIterator<Item = SearchText<'a>>,
    ) -> (SearchIndex, UpdateStats) {
        let mut next = SearchIndex {
            documents: HashMap::with_capacity(self.documents.len()),
            skills_with: self.skills_with.clone(),
            total_lengths: self.total_lengths,
        };
        let mut stats = UpdateStats::default();
        let mut added = Vec::new();
        for text in skills {
            match self.documents.get(&text.id) {
                Some(old) if old.is_text_of(&text) => {
                    stats.kept += 1;
                    next.documents.insert(text.id, Arc::clone(old));
                }
                _ => {
                    stats.tokenized += 1;
                    let document = Arc::new(Document::new(&text));
                    added.push(Arc::clone(&document));
                    next.documents.insert(text.id, document);
                }
            }
        }
        // What the previous index counted and this one does not hold (gone, or replaced by a
        // new text) comes out of the totals, and what was added goes in.
        for (id, old) in &self.documents {
            let same = next.documents.get(id).is_some_and(|d| Arc::ptr_eq(d, old));
            if same {
                continue;
            }
            if !next.documents.contains_key(id) {
                stats.removed += 1;
            }
            next.count(old, false);
        }
        for document in &added {
            next.count(document, true);
        }
        (next, stats)
    }

    /// Adds a skill's counts to the totals, or takes them out.
    fn count(&mut self, document: &Document, add: bool) {
        for field in 0..FIELDS {
            let length = u64::from(document.lengths[field]);
            self.total_lengths[field] = if add {
                self.total_lengths[field].saturating_add(length)
            } else {
                self.total_lengths[field].saturating_sub(length)
            };
        }
        for term in document.counts.keys() {
            if add {
                *self.skills_with.entry(term.clone()).or_default() += 1;
            } else if let Some(n) = self.skills_with.get_mut(term) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.skills_with.remove(term);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// The skills that match `query` (at least one of its terms) among those `wanted` keeps, best
    /// first; equal scores in no particular order (callers break ties).
    pub fn search(&self, query: &str, wanted: impl Fn(Uuid) -> bool) -> Vec<Hit> {
        let mut query_terms = terms(query);
        query_terms.sort_unstable();
        query_terms.dedup();
        // Each term's weight: rare terms say more (BM25's idf, never negative).
        let skills = self.documents.len() as f32;
        let weighted: Vec<(&str, f32)> = query_terms
            .iter()
            .filter_map(|term| {
                let with = *self.skills_with.get(term)? as f32;
                let idf = (1.0 + (skills - with + 0.5) / (with + 0.5)).ln();
                Some((term.as_str(), idf))
            })
            .collect();
        if weighted.is_empty() {
            return Vec::new();
        }
        let average = self
            .total_lengths
            .map(|total| (total as f32 / skills.max(1.0)).max(1.0));
        let mut hits: Vec<Hit> = self
            .documents
            .iter()
            .filter(|(id, _)| wanted(**id))
            .filter_map(|(id, document)| {
                let score = document.score(&weighted, &average);
                (score > 0.0).then_some(Hit { id: *id, score })
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
    }
}

impl Document {
    /// BM25F: per term, the fields' counts weighted and normalized by their length, summed, then
    /// saturated once and scaled by the term's idf.
    fn score(&self, query: &[(&str, f32)], average: &[f32; FIELDS]) -> f32 {
        let mut score = 0.0;
        for (term, idf) in query {
            let Some(counts) = self.counts.get(*term) else {
                continue;
            };
            let mut frequency = 0.0;
            for field in 0..FIELDS {
                if counts[field] == 0 {
                    continue;
                }
                let b = LENGTH_NORMALIZATION[field];
                let norm = 1.0 - b + b * self.lengths[field] as f32 / average[field];
                frequency += WEIGHTS[field] * counts[field] as f32 / norm;
            }
            score += idf * frequency / (K1 + frequency);
        }
        score
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
        assert_eq!(next.skills_with, fresh.skills_with);
        assert_eq!(next.total_lengths, fresh.total_lengths);
        assert_eq!(ids(&next.search("kubernetes", |_| true)), vec![5]);
        assert!(next.search("release", |_| true).is_empty());
        assert_eq!(ids(&next.search("spreadsheets", |_| true)), vec![2]);
        // The previous index is as it was.
        assert_eq!(ids(&first.search("release", |_| true)), vec![3]);
        // Nothing given: nothing left.
        let empty = next.updated([]);
        assert!(empty.is_empty() && empty.skills_with.is_empty());
        assert_eq!(empty.total_lengths, [0; FIELDS]);
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
