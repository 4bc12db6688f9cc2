//! Loading what a command needs to generate: the target (and draft) model in the requested
//! weight format, the tokenizer and the chat template, with the checks that they belong
//! together.

use crate::chat_template::ChatTemplate;
use crate::model::DecodeModel;
use crate::quant::WeightFormat;
use crate::runner::{Draft, Runner};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tinyllama_model::tokenizer::Tokenizer;

/// Where to find the models and how to run them.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub model: PathBuf,
    /// A tokenizer.json other than the model directory's.
    pub tokenizer: Option<PathBuf>,
    pub format: WeightFormat,
    pub draft: Option<PathBuf>,
    pub draft_format: Option<WeightFormat>,
    pub draft_k: usize,
}

pub struct Loaded {
    pub runner: Runner,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// The served model name: the directory's last component.
    pub name: String,
}

fn load_tokenizer(dir: &Path, explicit: Option<&Path>, model: &DecodeModel) -> Result<Tokenizer> {
    let c = &model.cfg;
    let tok = Tokenizer::load(explicit.unwrap_or(dir), c.bos_id, c.eos_id)?;
    if tok.vocab_size() > c.vocab_size {
        bail!(
            "the tokenizer ({}) has {} tokens but the model in {} only {} embeddings; they do not belong together",
            tok.path.display(),
            tok.vocab_size(),
            dir.display(),
            c.vocab_size
        );
    }
    Ok(tok)
}

/// Refuses a draft whose tokenizer maps any token differently from the target's.
pub fn check_same_tokenizer(target: &Tokenizer, draft: &Tokenizer) -> Result<()> {
    let (a, b) = (
        target.inner().get_vocab(true),
        draft.inner().get_vocab(true),
    );
    let differ = |what: String| -> Result<()> {
        bail!(
            "the draft model's tokenizer ({}) differs from the target's ({}): {what}; \
             speculative decoding needs both models to share one tokenizer \
             (use a draft from the same family, e.g. TinyLlama for Llama-2)",
            draft.path.display(),
            target.path.display()
        )
    };
    if a.len() != b.len() {
        return differ(format!("{} tokens vs {}", b.len(), a.len()));
    }
    let mut diff: Vec<(&String, &u32)> = a.iter().filter(|(t, id)| b.get(*t) != Some(id)).collect();
    if !diff.is_empty() {
        diff.sort_by_key(|x| *x.1);
        let (t, id) = diff[0];
        return differ(format!(
            "{} tokens differ, e.g. `{t}` is id {id} for the target and {:?} for the draft",
            diff.len(),
            b.get(t)
        ));
    }
    if (target.bos_id, target.eos_id) != (draft.bos_id, draft.eos_id) {
        return differ(format!(
            "BOS/EOS ids are {}/{} vs {}/{}",
            target.bos_id, target.eos_id, draft.bos_id, draft.eos_id
        ));
    }
    Ok(())
}

pub fn load(o: &LoadOptions) -> Result<Loaded> {
    let target = DecodeModel::load(&o.model, o.format)
        .with_context(|| format!("loading {}", o.model.display()))?;
    let tokenizer = load_tokenizer(&o.model, o.tokenizer.as_deref(), &target)?;
    let template = ChatTemplate::load(&o.model)?;
    let draft = match &o.draft {
        None => None,
        Some(dir) => {
            let model = DecodeModel::load(dir, o.draft_format.unwrap_or(o.format))
                .with_context(|| format!("loading the draft model {}", dir.display()))?;
            let dtok = load_tokenizer(dir, None, &model)?;
            check_same_tokenizer(&tokenizer, &dtok)?;
            Some(Draft {
                model,
                k: o.draft_k,
            })
        }
    };
    let name = o
        .model
        .canonicalize()
        .unwrap_or_else(|_| o.model.clone())
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    Ok(Loaded {
        runner: Runner::new(target, draft)?,
        tokenizer,
        template,
        name,
    })
}
