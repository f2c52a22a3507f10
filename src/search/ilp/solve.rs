//! The solver behind both ILPs: a good_lp model solved by microlp (pure Rust, the default
//! build) or HiGHS (`--features highs`), returning every variable's value together with the
//! solver's status, objective, best bound and relative optimality gap.

use good_lp::{Constraint, Expression, ProblemVariables, Solution, SolverModel, Variable};
use serde::Serialize;

/// Which MILP solver runs the ILPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// microlp through good_lp: pure Rust, branch and bound over a dual simplex.
    Microlp,
    /// HiGHS (Huangfu & Hall 2018) through good_lp's model and the `highs` crate.
    #[cfg(feature = "highs")]
    Highs,
}

impl Solver {
    /// The build's default: HiGHS when compiled in, else microlp.
    pub fn default_for_build() -> Solver {
        #[cfg(feature = "highs")]
        return Solver::Highs;
        #[cfg(not(feature = "highs"))]
        Solver::Microlp
    }

    /// Name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Solver::Microlp => "microlp",
            #[cfg(feature = "highs")]
            Solver::Highs => "highs",
        }
    }
}

/// How to solve: which solver, how long at most, and the relative gap at which an incumbent
/// counts as optimal.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IlpOptions {
    /// The solver.
    pub solver: Solver,
    /// Wall-clock limit of one solve, s (the only clock in search/, inside the solver: a
    /// solve that hits it returns its best incumbent with status `time_limit`).
    pub time_limit_s: f64,
    /// Relative MIP gap |incumbent − bound| / |incumbent| at which the solver stops; set
    /// explicitly for both solvers (HiGHS's own default is 1e-4).
    pub mip_gap: f64,
}

impl Default for IlpOptions {
    fn default() -> Self {
        IlpOptions {
            solver: Solver::default_for_build(),
            time_limit_s: 30.0,
            mip_gap: 1e-6,
        }
    }
}

/// How a solve ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IlpStatus {
    /// Proven optimal (gap 0).
    Optimal,
    /// Stopped with the incumbent within the requested gap of the bound.
    GapLimit,
    /// Stopped by the time limit; the best incumbent found is returned.
    TimeLimit,
    /// No assignment satisfies the constraints (e.g. nothing fits in memory).
    Infeasible,
}

impl IlpStatus {
    /// Name as printed.
    pub fn name(self) -> &'static str {
        match self {
            IlpStatus::Optimal => "optimal",
            IlpStatus::GapLimit => "gap-limit",
            IlpStatus::TimeLimit => "time-limit",
            IlpStatus::Infeasible => "infeasible",
        }
    }
}

/// What the solver reports about one solve.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct IlpReport {
    /// Which solver.
    pub solver: Solver,
    /// How it ended.
    pub status: IlpStatus,
    /// Objective of the returned assignment (NaN when infeasible).
    pub objective: f64,
    /// Best proven bound on the objective (NaN when unknown).
    pub best_bound: f64,
    /// Relative gap between objective and bound (0 when proven optimal, NaN when unknown).
    pub gap: f64,
    /// Variables in the model.
    pub variables: usize,
    /// Constraints in the model.
    pub constraints: usize,
}

impl IlpReport {
    /// One short phrase: `optimal`, `gap 0.12%`, `time-limit, gap 3.4%`, `infeasible`.
    pub fn summary(&self) -> String {
        match self.status {
            IlpStatus::Optimal | IlpStatus::Infeasible => self.status.name().to_string(),
            s => format!("{}, gap {:.2}%", s.name(), 100.0 * self.gap),
        }
    }
}

/// A solver failure that is not an answer about the model (a bug or a solver limitation).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum IlpError {
    /// The solver refused the model or failed while solving it.
    #[error("the {solver} ILP solver failed: {message}")]
    Solver {
        /// Which solver.
        solver: &'static str,
        /// What it said.
        message: String,
    },
}

/// A model to minimise: its variables (in creation order), objective and constraints.
pub(crate) struct Model {
    pub vars: ProblemVariables,
    pub list: Vec<Variable>,
    pub objective: Expression,
    pub constraints: Vec<Constraint>,
    /// A feasible assignment to start branch and bound from (value per variable, in order).
    pub start: Option<Vec<f64>>,
}

impl Model {
    pub fn new() -> Model {
        Model {
            vars: ProblemVariables::new(),
            list: Vec::new(),
            objective: Expression::default(),
            constraints: Vec::new(),
            start: None,
        }
    }

    /// Adds a variable and returns it.
    pub fn add(&mut self, def: good_lp::VariableDefinition) -> Variable {
        let v = self.vars.add(def);
        self.list.push(v);
        v
    }
}

/// What a solve stopped by its time limit before finding an incumbent of its own can still
/// return: the model's start, if it had one.
struct Stopped {
    list: Vec<Variable>,
    objective: Expression,
    start: Option<Vec<f64>>,
}

impl Solution for Stopped {
    fn status(&self) -> good_lp::SolutionStatus {
        good_lp::SolutionStatus::TimeLimit
    }
    fn value(&self, v: Variable) -> f64 {
        let at = self.list.iter().position(|x| *x == v);
        self.start.as_ref().zip(at).map_or(0.0, |(s, i)| s[i])
    }
}

impl Stopped {
    /// The start as the answer, status `time_limit`, gap unknown.
    fn incumbent(&self, mut report: IlpReport) -> Option<Solved> {
        let values = self.start.clone()?;
        report.status = IlpStatus::TimeLimit;
        report.objective = self.objective.eval_with(self);
        Some((Some(values), report))
    }
}

/// Values of every variable (in creation order) and the report; `None` values when infeasible.
pub(crate) type Solved = (Option<Vec<f64>>, IlpReport);

/// Minimises `model` with `opts`.
pub(crate) fn minimise(model: Model, opts: &IlpOptions) -> Result<Solved, IlpError> {
    let report = IlpReport {
        solver: opts.solver,
        status: IlpStatus::Infeasible,
        objective: f64::NAN,
        best_bound: f64::NAN,
        gap: f64::NAN,
        variables: model.list.len(),
        constraints: model.constraints.len(),
    };
    match opts.solver {
        Solver::Microlp => microlp(model, opts, report),
        #[cfg(feature = "highs")]
        Solver::Highs => highs(model, opts, report),
    }
}

fn microlp(model: Model, opts: &IlpOptions, mut report: IlpReport) -> Result<Solved, IlpError> {
    let fail = |message: String| IlpError::Solver {
        solver: "microlp",
        message,
    };
    let Model {
        vars,
        list,
        objective,
        constraints,
        start,
    } = model;
    let stopped = Stopped {
        list: list.clone(),
        objective: objective.clone(),
        start: start.clone(),
    };
    let mut p = good_lp::WithTimeLimit::with_time_limit(
        vars.minimise(objective).using(good_lp::microlp),
        opts.time_limit_s,
    );
    if let Some(x) = start {
        p = good_lp::WithInitialSolution::with_initial_solution(p, list.iter().copied().zip(x));
    }
    p = good_lp::WithMipGap::with_mip_gap(p, opts.mip_gap as f32)
        .map_err(|e| fail(e.to_string()))?;
    for c in constraints {
        p.add_constraint(c);
    }
    let sol = match p.solve() {
        Ok(s) => s,
        Err(good_lp::ResolutionError::Infeasible) => return Ok((None, report)),
        // Interrupted before an incumbent of its own: the start is the best known.
        Err(good_lp::ResolutionError::Other(m)) if m.starts_with("Time limit") => {
            return stopped.incumbent(report).ok_or_else(|| fail(m.into()));
        }
        Err(e) => return Err(fail(e.to_string())),
    };
    let values: Vec<f64> = list.iter().map(|v| sol.value(*v)).collect();
    report.status = match sol.status() {
        good_lp::solvers::SolutionStatus::Optimal => IlpStatus::Optimal,
        good_lp::solvers::SolutionStatus::GapLimit => IlpStatus::GapLimit,
        good_lp::solvers::SolutionStatus::TimeLimit => IlpStatus::TimeLimit,
    };
    let inner = sol.into_inner();
    report.objective = inner.objective();
    report.best_bound = inner.stats().best_bound.unwrap_or(f64::NAN);
    report.gap = inner.gap().unwrap_or(f64::NAN);
    if report.status == IlpStatus::Optimal {
        report.gap = 0.0;
        report.best_bound = report.objective;
    }
    Ok((Some(values), report))
}

/// The HiGHS model with the options set explicitly: time limit, relative MIP gap, one thread,
/// a fixed seed, and the start when there is one.
#[cfg(feature = "highs")]
fn highs_model(
    p: good_lp::solvers::highs::HighsProblem,
    opts: &IlpOptions,
    start: Option<&[f64]>,
) -> Result<highs::Model, String> {
    let mut m = p.try_into_inner().map_err(|e| e.to_string())?;
    m.make_quiet();
    m.set_option("time_limit", opts.time_limit_s);
    m.set_option("mip_rel_gap", opts.mip_gap);
    m.set_option("threads", 1);
    m.set_option("random_seed", 0);
    if let Some(x) = start {
        m.try_set_solution(Some(x), None, None, None)
            .map_err(|e| format!("{e:?}"))?;
    }
    Ok(m)
}

/// HiGHS is driven one solve at a time: its task scheduler is process-wide.
#[cfg(feature = "highs")]
static HIGHS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(feature = "highs")]
fn highs(model: Model, opts: &IlpOptions, mut report: IlpReport) -> Result<Solved, IlpError> {
    use highs::HighsModelStatus as S;
    let fail = |message: String| IlpError::Solver {
        solver: "highs",
        message,
    };
    let Model {
        vars,
        list,
        objective,
        constraints,
        start,
    } = model;
    let integer: Vec<bool> = vars
        .iter_variables_with_def()
        .map(|(_, d)| d.is_integer())
        .collect();
    let stopped = Stopped {
        list: list.clone(),
        objective: objective.clone(),
        start: start.clone(),
    };
    let mut p = vars.minimise(objective).using(good_lp::highs);
    for c in constraints {
        p.add_constraint(c);
    }
    let m = highs_model(p, opts, start.as_deref()).map_err(fail)?;
    let _guard = HIGHS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let solved = m.try_solve().map_err(|e| fail(format!("{e:?}")))?;
    report.status = match solved.status() {
        S::Infeasible | S::UnboundedOrInfeasible => return Ok((None, report)),
        S::Optimal if solved.mip_gap() > 0.0 && solved.mip_gap().is_finite() => IlpStatus::GapLimit,
        S::Optimal => IlpStatus::Optimal,
        S::ReachedTimeLimit | S::ReachedIterationLimit | S::ReachedSolutionLimit => {
            IlpStatus::TimeLimit
        }
        other => return Err(fail(format!("status {other:?}"))),
    };
    if solved.primal_solution_status() != highs::HighsSolutionStatus::Feasible {
        // Stopped before an incumbent of its own: the start is the best known.
        return stopped
            .incumbent(report)
            .ok_or_else(|| fail("time limit reached before any feasible solution".into()));
    }
    // good_lp adds one HiGHS column per variable, in creation order.
    let cols = solved.get_solution().columns().to_vec();
    let values = cols
        .iter()
        .zip(&integer)
        .take(list.len())
        .map(|(&x, &int)| if int { x.round() } else { x })
        .collect();
    report.objective = solved.objective_value();
    let gap = solved.mip_gap();
    report.gap = if gap.is_finite() { gap.max(0.0) } else { 0.0 };
    report.best_bound = solved
        .double_info_value(c"mip_dual_bound")
        .ok()
        .filter(|b| b.is_finite())
        .unwrap_or(report.objective);
    if report.status == IlpStatus::Optimal {
        report.gap = 0.0;
    }
    Ok((Some(values), report))
}
