//! Which law to plan with: a published or fitted law chosen by name ([`LawChoice`]), its
//! constrained optimum for a budget, and every published law's bound side by side
//! ([`LawBounds`]).

use super::{
    Allocation, Binding, ConstrainedChoice, Constraints, KaplanLaw, ParametricLaw, PowerLawFrontier,
};
use crate::error::{Error, Result};
use crate::model::Transformer;
use crate::params::ParamBasis;
use serde::{Deserialize, Serialize};

/// Which law sets the target and predicts loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "law")]
pub enum LawChoice {
    /// Kaplan et al. 2020: frontier of Table 6, loss by eq. 1.5 on non-embedding parameters.
    Kaplan,
    /// Hoffmann et al. 2022 approach 3 (`chinchilla-3`): the parametric fit of their eq. 10.
    /// Besiroglu et al. 2024 found its parameters mis-estimated (its optimum is about half the
    /// size of approaches 1 and 2).
    Chinchilla,
    /// Besiroglu et al. 2024 refit of approach 3 (also the name `chinchilla`: a whole
    /// parametric law, so it ranks shapes by loss, and its optimum agrees with approaches 1 and
    /// 2).
    Besiroglu,
    /// Hoffmann et al. 2022 approach 1 (`chinchilla-1`): the size from its Table 2 frontier;
    /// losses by the Besiroglu refit (approach 1 publishes no loss function).
    ChinchillaApproach1,
    /// Hoffmann et al. 2022 approach 2 (`chinchilla-2`): the size from its Table 2 frontier;
    /// losses by the Besiroglu refit.
    ChinchillaApproach2,
    /// A law you fitted ([`crate::scaling::fit_parametric`]).
    Fitted(ParametricLaw),
}

impl std::str::FromStr for LawChoice {
    type Err = Error;

    /// Parse `kaplan`, `chinchilla-1`, `chinchilla-2`, `chinchilla-3` (also `chinchilla3`,
    /// `hoffmann`), `besiroglu`, and `chinchilla`, an alias of `besiroglu`: the refit is the one
    /// Chinchilla-form law whose optimum agrees with Hoffmann et al.'s approaches 1 and 2 and
    /// that has a loss to rank by (approach 3 as published gives about half their size).
    ///
    /// ```
    /// use lmshape::plan::LawChoice;
    /// assert_eq!("kaplan".parse::<LawChoice>()?, LawChoice::Kaplan);
    /// assert_eq!(LawChoice::Besiroglu.to_string(), "besiroglu");
    /// assert_eq!("chinchilla".parse::<LawChoice>()?, LawChoice::Besiroglu);
    /// assert_eq!("chinchilla-3".parse::<LawChoice>()?, LawChoice::Chinchilla);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<LawChoice> {
        match s.to_ascii_lowercase().as_str() {
            "kaplan" => Ok(LawChoice::Kaplan),
            "chinchilla3" | "chinchilla-3" | "hoffmann" => Ok(LawChoice::Chinchilla),
            "chinchilla" | "besiroglu" => Ok(LawChoice::Besiroglu),
            "chinchilla1" | "chinchilla-1" => Ok(LawChoice::ChinchillaApproach1),
            "chinchilla2" | "chinchilla-2" => Ok(LawChoice::ChinchillaApproach2),
            _ => Err(Error::UnknownName {
                kind: "scaling law",
                name: s.into(),
                known: "kaplan, chinchilla-1, chinchilla-2, chinchilla-3, besiroglu, chinchilla (= besiroglu)"
                    .into(),
            }),
        }
    }
}

impl std::fmt::Display for LawChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LawChoice::Kaplan => "kaplan",
            LawChoice::Chinchilla => "chinchilla-3",
            LawChoice::Besiroglu => "besiroglu",
            LawChoice::ChinchillaApproach1 => "chinchilla-1",
            LawChoice::ChinchillaApproach2 => "chinchilla-2",
            LawChoice::Fitted(_) => "fitted",
        })
    }
}

impl LawChoice {
    /// The Chinchilla-form law behind the choice; `None` for Kaplan's, which has another form.
    pub fn parametric(&self) -> Option<ParametricLaw> {
        match self {
            LawChoice::Kaplan => None,
            LawChoice::Chinchilla => Some(ParametricLaw::CHINCHILLA),
            LawChoice::Besiroglu
            | LawChoice::ChinchillaApproach1
            | LawChoice::ChinchillaApproach2 => Some(ParametricLaw::BESIROGLU),
            LawChoice::Fitted(l) => Some(*l),
        }
    }

    /// The parameter count the law speaks of: Kaplan et al.'s non-embedding `N`, every
    /// parameter for the Chinchilla-form laws (Hoffmann et al. 2022 count embeddings).
    pub fn size_basis(&self) -> ParamBasis {
        match self {
            LawChoice::Kaplan => ParamBasis::NonEmbedding,
            _ => ParamBasis::Total,
        }
    }

    /// Predicted loss of `model` trained on `tokens`.
    ///
    /// # Errors
    /// A model that breaks one of its rules ([`crate::Transformer::validate`]) or counts that overflow `u64`, or the law's own errors.
    pub fn loss(&self, model: &Transformer, tokens: f64) -> Result<f64> {
        self.loss_of_counts(&model.param_counts()?, tokens)
    }

    /// Predicted loss of a model whose parameter counts are `c`, trained on `tokens`: the
    /// law reads the count of its basis ([`LawChoice::size_basis`]).
    ///
    /// # Errors
    /// The law's own errors.
    pub fn loss_of_counts(&self, c: &crate::params::ParamCounts, tokens: f64) -> Result<f64> {
        match self.parametric() {
            None => KaplanLaw::PUBLISHED.loss(c.non_embedding_params as f64, tokens),
            Some(l) => l.loss(c.total_params as f64, tokens),
        }
    }

    /// The compute-optimal size moved by the constraints, and which one binds.
    pub(crate) fn target(&self, flops: f64, cons: &Constraints) -> Result<(f64, Binding)> {
        let c = self.constrained(flops, cons)?;
        Ok((c.params, c.binding))
    }

    /// The law's compute-optimal size for `flops`, moved along `C = 6ND` by the constraints
    /// ([`Constraints::clamp`]), with the tokens `C / 6N` and the law's loss there. For Kaplan's
    /// law the optimum is the frontier's `N_opt` (non-embedding) and the loss eq. 1.5; its
    /// `optimal` keeps the frontier's published `D_opt`, which is not `C / 6N_opt` (see
    /// [`PowerLawFrontier::KAPLAN`]).
    ///
    /// ```
    /// use lmshape::plan::LawChoice;
    /// use lmshape::scaling::{Binding, Constraints};
    /// let floor = Constraints { token_floor: Some(350e9), ..Default::default() };
    /// let c = LawChoice::Kaplan.constrained(4.7e23, &floor)?;
    /// assert_eq!(c.binding, Binding::TokenFloor);
    /// assert!((c.tokens / 350e9 - 1.0).abs() < 1e-9);
    /// # Ok::<(), lmshape::Error>(())
    /// ```
    ///
    /// # Errors
    /// The law's errors for the budget and [`Constraints::clamp`]'s.
    pub fn constrained(&self, flops: f64, cons: &Constraints) -> Result<ConstrainedChoice> {
        let frontier = match self {
            LawChoice::Kaplan => PowerLawFrontier::KAPLAN,
            LawChoice::ChinchillaApproach1 => PowerLawFrontier::CHINCHILLA_APPROACH1,
            LawChoice::ChinchillaApproach2 => PowerLawFrontier::CHINCHILLA_APPROACH2,
            _ => match self.parametric() {
                Some(l) => return l.constrained(flops, cons),
                None => PowerLawFrontier::KAPLAN,
            },
        };
        let optimal = frontier.optimal(flops)?;
        let (params, binding) = cons.clamp(flops, optimal.params)?;
        let tokens = super::tokens_for_flops(flops, params)?;
        let loss = |n: f64, d: f64| match self.parametric() {
            Some(l) => l.loss(n, d),
            None => KaplanLaw::PUBLISHED.loss(n, d),
        };
        let predicted_loss = loss(params, tokens)?;
        // Compared on the same iso-FLOP curve.
        let optimal_loss = loss(
            optimal.params,
            super::tokens_for_flops(flops, optimal.params)?,
        )?;
        Ok(ConstrainedChoice {
            params,
            tokens,
            binding,
            predicted_loss,
            optimal,
            optimal_loss,
            loss_cost: (predicted_loss - optimal_loss).max(0.0),
        })
    }
}

/// Each law's compute-optimal allocation for the budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LawBounds {
    /// Kaplan et al. 2020 (non-embedding parameters). Its published `N_opt` and `D_opt` are
    /// separate fits and do not satisfy `C = 6ND` (see [`PowerLawFrontier::KAPLAN`]).
    pub kaplan: Allocation,
    /// Chinchilla approach 1.
    pub chinchilla_approach1: Allocation,
    /// Chinchilla approach 2.
    pub chinchilla_approach2: Allocation,
    /// Chinchilla approach 3.
    pub chinchilla_approach3: Allocation,
    /// Besiroglu et al. 2024.
    pub besiroglu: Allocation,
}

impl LawBounds {
    /// Every law's optimum for `flops`.
    ///
    /// # Errors
    /// A budget that is not finite and positive.
    pub fn for_flops(flops: f64) -> Result<LawBounds> {
        Ok(LawBounds {
            kaplan: PowerLawFrontier::KAPLAN.optimal(flops)?,
            chinchilla_approach1: PowerLawFrontier::CHINCHILLA_APPROACH1.optimal(flops)?,
            chinchilla_approach2: PowerLawFrontier::CHINCHILLA_APPROACH2.optimal(flops)?,
            chinchilla_approach3: ParametricLaw::CHINCHILLA.compute_optimal(flops)?,
            besiroglu: ParametricLaw::BESIROGLU.compute_optimal(flops)?,
        })
    }
}
