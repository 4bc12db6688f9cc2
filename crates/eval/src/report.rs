//! The markdown table printed after `eval tasks`.

use crate::run::TaskResult;
use crate::tasks::Task;

/// One row per (task, metric), then the average of the headline metrics (`acc_norm` where the
/// harness reports it, else `acc`) over the commonsense tasks present, as in TinyLlama's table.
pub fn markdown(results: &[TaskResult]) -> String {
    let mut s = String::from("| task | metric | value | stderr | n |\n|---|---|---:|---:|---:|\n");
    for r in results {
        for m in &r.metrics {
            let stderr = m.stderr.map_or("n/a".to_string(), |e| format!("{e:.4}"));
            s += &format!(
                "| {} | {} | {:.4} | {stderr} | {} |\n",
                r.task.name(),
                m.name,
                m.value,
                r.n
            );
        }
    }
    if let Some((avg, k)) = headline_average(results) {
        s += &format!("| average of {k} | acc_norm / acc | {avg:.4} | | |\n");
    }
    s
}

/// Mean of the headline metrics of the non-LAMBADA tasks, and how many there were.
pub fn headline_average(results: &[TaskResult]) -> Option<(f64, usize)> {
    let vals: Vec<f64> = results
        .iter()
        .filter(|r| r.task != Task::Lambada)
        .filter_map(|r| r.metric(r.task.headline()).map(|m| m.value))
        .collect();
    (vals.len() > 1).then(|| (vals.iter().sum::<f64>() / vals.len() as f64, vals.len()))
}
