// SPDX-License-Identifier: GPL-2.0-or-later
//! The cost model: resources × seconds × hourly rates, in integers.
//!
//! Every product is formed in `i128` and divided once at the end, rounding half up to
//! the micro-dollar, so a price never drifts with the order of the terms.

use crate::core::config::{BillingWeights, Config, Partition, Pricing, TresRates};
use crate::core::money::{Money, MICROS_PER_UNIT};
use crate::core::pricing::job::{JobRequest, Resources};
use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    #[error("partition '{0}' has no price in asbb.toml")]
    UnpricedPartition(String),
    #[error("partition '{partition}' has no price for gres/gpu{typ}")]
    UnpricedGpu { partition: String, typ: String },
    #[error("cost is too large to compute")]
    Overflow,
}

const SECONDS_PER_HOUR: i128 = 3600;
const MB_PER_GB: i128 = 1024;

/// Cost of one task holding `res` for `seconds` in `partition`, before minimum
/// charge and QOS multiplier.
pub fn raw_cost(partition: &Partition, res: &Resources, seconds: u64) -> Result<Money, CostError> {
    // Every product is checked. A completion's elapsed time comes from SLURM's
    // record and is not bounded like a time limit; fuzzing found i128 overflows (a
    // panic in debug builds, a silently wrong charge in release) with billing prices.
    let secs = seconds as i128;
    let (numerator, denominator) = match &partition.pricing {
        Pricing::Tres(rates) => {
            let per_hour_x1024 = tres_per_hour_x1024(&partition.name, rates, res)?;
            (mul(per_hour_x1024, secs)?, SECONDS_PER_HOUR * MB_PER_GB)
        }
        Pricing::Billing { unit_hour, weights } => {
            let units_micro_x1024 = billing_units_micro_x1024(weights, res)?;
            (
                mul(mul(units_micro_x1024, unit_hour.micros() as i128)?, secs)?,
                SECONDS_PER_HOUR * MB_PER_GB * MICROS_PER_UNIT as i128,
            )
        }
        Pricing::Aws { node_hour, .. } => {
            (mul(mul(res.nodes as i128, node_hour.micros() as i128)?, secs)?, SECONDS_PER_HOUR)
        }
    };
    let micros = add(numerator, denominator / 2)? / denominator;
    i64::try_from(micros).map(Money::from_micros).map_err(|_| CostError::Overflow)
}

fn mul(a: i128, b: i128) -> Result<i128, CostError> {
    a.checked_mul(b).ok_or(CostError::Overflow)
}

fn add(a: i128, b: i128) -> Result<i128, CostError> {
    a.checked_add(b).ok_or(CostError::Overflow)
}

fn tres_per_hour_x1024(partition: &str, r: &TresRates, res: &Resources) -> Result<i128, CostError> {
    let mut total = add(
        add(
            mul(mul(res.cpus as i128, r.cpu.micros() as i128)?, MB_PER_GB)?,
            mul(res.mem_mb as i128, r.mem_gb.micros() as i128)?,
        )?,
        mul(mul(res.nodes as i128, r.node.micros() as i128)?, MB_PER_GB)?,
    )?;
    for (typ, &count) in &res.gpus {
        let rate = if typ.is_empty() { r.gpu } else { r.gpu_typed.get(typ).copied().or(r.gpu) };
        let rate = rate.ok_or_else(|| CostError::UnpricedGpu {
            partition: partition.to_string(),
            typ: if typ.is_empty() { String::new() } else { format!(":{typ}") },
        })?;
        total = add(total, mul(mul(count as i128, rate.micros() as i128)?, MB_PER_GB)?)?;
    }
    Ok(total)
}

/// SLURM's billing TRES (sum of weighted TRES), in micro-units × 1024.
fn billing_units_micro_x1024(w: &BillingWeights, res: &Resources) -> Result<i128, CostError> {
    if w.cpus_only {
        return mul(mul(res.cpus as i128, MICROS_PER_UNIT as i128)?, MB_PER_GB);
    }
    let mut total = add(
        add(
            mul(mul(res.cpus as i128, w.cpu_micro as i128)?, MB_PER_GB)?,
            mul(res.mem_mb as i128, w.mem_gb_micro as i128)?,
        )?,
        mul(mul(res.nodes as i128, w.node_micro as i128)?, MB_PER_GB)?,
    )?;
    for (typ, &count) in &res.gpus {
        let weight =
            if typ.is_empty() { w.gpu_micro } else { w.gpu_typed_micro.get(typ).copied().unwrap_or(w.gpu_micro) };
        total = add(total, mul(mul(count as i128, weight as i128)?, MB_PER_GB)?)?;
    }
    Ok(total)
}

/// One task's price after QOS multiplier and minimum charge. Called only for runs
/// that were allocated (a job that never started is never priced), so a run that
/// started and ended within one second still costs the minimum charge.
pub fn task_cost(
    config: &Config,
    partition: &Partition,
    qos: Option<&str>,
    res: &Resources,
    seconds: u64,
) -> Result<Money, CostError> {
    let mut cost = raw_cost(partition, res, seconds)?;
    if let Some(mult) = qos.and_then(|q| config.qos_multipliers.get(q)) {
        let scaled = (cost.micros() as i128 * *mult as i128 + MICROS_PER_UNIT as i128 / 2) / MICROS_PER_UNIT as i128;
        cost = Money::from_micros(i64::try_from(scaled).map_err(|_| CostError::Overflow)?);
    }
    Ok(cost.max(config.policy.minimum_charge))
}

/// The estimate for a whole request: every array task for its full time limit.
pub fn estimate(config: &Config, req: &JobRequest) -> Result<Money, CostError> {
    let partition =
        config.partitions.get(&req.partition).ok_or_else(|| CostError::UnpricedPartition(req.partition.clone()))?;
    let resources = untyped_gpus_at_dearest_type(partition, &req.resources);
    let per_task = task_cost(config, partition, req.qos.as_deref(), &resources, req.time_limit_min as u64 * 60)?;
    per_task.checked_mul(req.array_tasks.max(1) as i64).ok_or(CostError::Overflow)
}

/// A request's untyped GPUs (`--gres=gpu:8`) counted as the partition's dearest GPU
/// type: SLURM may give any type, and the run is charged at the type it got. (Only
/// for requests: an allocation's GPUs without a type are on nodes that have none.)
fn untyped_gpus_at_dearest_type<'r>(partition: &Partition, res: &'r Resources) -> Cow<'r, Resources> {
    let Some(&count) = res.gpus.get("") else { return Cow::Borrowed(res) };
    let dearest = match &partition.pricing {
        Pricing::Tres(r) => r
            .gpu_typed
            .iter()
            .filter(|(_, rate)| r.gpu.map_or(true, |g| **rate > g))
            .max_by_key(|(_, rate)| **rate)
            .map(|(typ, _)| typ),
        Pricing::Billing { weights: w, .. } => w
            .gpu_typed_micro
            .iter()
            .filter(|(_, weight)| **weight > w.gpu_micro)
            .max_by_key(|(_, weight)| **weight)
            .map(|(typ, _)| typ),
        Pricing::Aws { .. } => None,
    };
    let Some(typ) = dearest else { return Cow::Borrowed(res) };
    let mut priced = res.clone();
    priced.gpus.remove("");
    let slot = priced.gpus.entry(typ.clone()).or_insert(0);
    *slot = slot.saturating_add(count);
    Cow::Owned(priced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pricing::job::JobRequest;
    use std::collections::BTreeMap;

    fn config() -> Config {
        Config::parse(
            r#"
[policy]
minimum_charge = "0.01"
[partitions.debug.rates]
cpu = 0.02
mem_gb = 0.005
node = 0.10
"gres/gpu" = 1.0
"gres/gpu:a100" = 3.0
[partitions.batch.billing]
unit_hour = 0.01
weights = "CPU=1.0,Mem=0.25G,GRES/gpu=2.0"
[partitions.aws.aws]
instance_type = "c5.2xlarge"
node_hour = 0.34
[qos_multipliers]
high = 1.5
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn req(
        partition: &str,
        nodes: u32,
        cpus: u32,
        mem_mb: u64,
        gpus: &[(&str, u32)],
        minutes: u32,
        tasks: u32,
    ) -> JobRequest {
        JobRequest {
            user: "alice".into(),
            uid: 1000,
            account: "chem".into(),
            partition: partition.into(),
            resources: Resources {
                nodes,
                cpus,
                mem_mb,
                gpus: gpus.iter().map(|(t, n)| (t.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            },
            time_limit_min: minutes,
            array_tasks: tasks,
            qos: None,
            job_id: None,
            job_name: None,
        }
    }

    #[test]
    fn tres_rates() {
        let c = config();
        // 2 nodes × 16 cpus × $0.02 + 64 GB × $0.005 + 2 × $0.10 = 0.64 + 0.32 + 0.20 = $1.16/h, 2 h
        let e = estimate(&c, &req("debug", 2, 32, 65536, &[], 120, 1)).unwrap();
        assert_eq!(e.micros(), 2_320_000);
        // A typed GPU is priced at its own rate. An untyped one may be given any type,
        // so a request is priced at the dearest (3 × $3.00 + $0.10 node)...
        let e = estimate(&c, &req("debug", 1, 0, 0, &[("a100", 2), ("", 1)], 60, 1)).unwrap();
        assert_eq!(e.micros(), 9_100_000);
        // ... and a run on GPUs without a type at the generic rate (2 × $3.00 + $1.00 + $0.10).
        let p = &c.partitions["debug"];
        let run = req("debug", 1, 0, 0, &[("a100", 2), ("", 1)], 60, 1).resources;
        assert_eq!(raw_cost(p, &run, 3600).unwrap().micros(), 7_100_000);
        // array tasks multiply
        let e = estimate(&c, &req("debug", 1, 1, 0, &[], 60, 10)).unwrap();
        assert_eq!(e.micros(), 10 * 120_000);
    }

    #[test]
    fn billing_and_aws() {
        let c = config();
        // billing = 4 cpu + 8 GB × 0.25 + 1 gpu × 2 = 8 units × $0.01 × 1 h
        let e = estimate(&c, &req("batch", 1, 4, 8192, &[("", 1)], 60, 1)).unwrap();
        assert_eq!(e.micros(), 80_000);
        // 3 nodes × $0.34 × 0.5 h
        let e = estimate(&c, &req("aws", 3, 1, 0, &[], 30, 1)).unwrap();
        assert_eq!(e.micros(), 510_000);
    }

    #[test]
    fn minimum_charge_and_qos() {
        let c = config();
        let p = &c.partitions["debug"];
        let r = Resources { nodes: 1, cpus: 1, mem_mb: 0, gpus: BTreeMap::new() };
        assert_eq!(task_cost(&c, p, None, &r, 1).unwrap().micros(), 10_000);
        // A run that started and ended within one second still pays the minimum.
        assert_eq!(task_cost(&c, p, None, &r, 0).unwrap().micros(), 10_000);
        assert_eq!(task_cost(&c, p, Some("high"), &r, 3600).unwrap().micros(), 180_000);
    }

    #[test]
    fn unpriced_things_are_errors() {
        let c = config();
        assert_eq!(estimate(&c, &req("nope", 1, 1, 0, &[], 1, 1)), Err(CostError::UnpricedPartition("nope".into())));
        let mut c2 = c.clone();
        if let Pricing::Tres(r) = &mut c2.partitions.get_mut("debug").unwrap().pricing {
            r.gpu = None;
        }
        assert_eq!(
            estimate(&c2, &req("debug", 1, 1, 0, &[("h100", 1)], 1, 1)),
            Err(CostError::UnpricedGpu { partition: "debug".into(), typ: ":h100".into() })
        );
    }
}
