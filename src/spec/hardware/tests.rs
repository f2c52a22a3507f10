//! Device efficiency defaults and rates, field errors, and preset round trips.

use super::*;

const DEVICE: &str = "name: g\nmemory_gib: 80\nhbm_gbytes_s: 2000\npeak_tflops: {bf16: 300}\n";

/// The defaults are the A100 preset's figures, as their doc says: every field of the
/// preset's efficiency table, and a device file without one gets exactly them.
#[test]
fn default_efficiency_is_the_a100_presets() {
    let a100 = crate::spec::load_device("a100-sxm4-80gb").unwrap();
    assert_eq!(default_efficiency(), a100.efficiency);
    let bare = DeviceSpec::from_yaml("g.yaml", DEVICE).unwrap();
    assert_eq!(bare.efficiency, a100.efficiency);
    assert_eq!(
        (bare.efficiency.attention_fwd, bare.efficiency.attention_bwd),
        (0.73, 0.63)
    );
}

/// A device file that gives its vendor attention kernel's efficiency but not
/// FlashAttention-2's has FA2 as its best kernel (as on Ampere): the FA2 fields default to
/// the attention fields; the H100 preset sets both (cuDNN 0.51/0.47, FA2 0.32/0.30).
#[test]
fn fa2_attention_defaults_to_the_attention_efficiency() {
    let d = DeviceSpec::from_yaml(
        "g.yaml",
        &format!("{DEVICE}efficiency: {{attention_fwd: 0.5, attention_bwd: 0.4}}\n"),
    )
    .unwrap();
    assert_eq!(
        (
            d.efficiency.attention_fa2_fwd,
            d.efficiency.attention_fa2_bwd
        ),
        (0.5, 0.4)
    );
    let h100 = crate::spec::load_device("h100-sxm5-80gb")
        .unwrap()
        .efficiency;
    assert_eq!((h100.attention_fwd, h100.attention_bwd), (0.51, 0.47));
    assert_eq!(
        (h100.attention_fa2_fwd, h100.attention_fa2_bwd),
        (0.32, 0.30)
    );
}

/// Tensor FLOPs per exponential: 2,048 per clock per SM on A100, 4,096 on Hopper and 8,192
/// on Blackwell, over 16 exponentials — 128, 256 and 512; a device file without the field
/// gets the A100's.
#[test]
fn tensor_flops_per_exp_follow_the_sm_rates() {
    for (name, want) in [
        ("a100-sxm4-40gb", 128.0),
        ("a100-sxm4-80gb", 128.0),
        ("h100-sxm5-80gb", 256.0),
        ("h200-sxm-141gb", 256.0),
        ("b200-sxm-180gb", 512.0),
    ] {
        let d = crate::spec::load_device(name).unwrap();
        assert_eq!(d.tensor_flops_per_exp, want, "{name}");
    }
    let bare = DeviceSpec::from_yaml("g.yaml", DEVICE).unwrap();
    assert_eq!(bare.tensor_flops_per_exp, 128.0);
}

/// The overlap interference is a share lost, so 0 (collectives that cost the compute
/// nothing) is allowed and 1 (compute stalled while any collective runs) is refused, naming
/// the field; every GPU preset carries Lee et al.'s 0.16.
#[test]
fn overlap_interference_is_a_share_below_one() {
    let with = |v: &str| {
        DeviceSpec::from_yaml(
            "g.yaml",
            &format!("{DEVICE}efficiency: {{overlap_interference: {v}}}\n"),
        )
    };
    assert_eq!(with("0").unwrap().efficiency.overlap_interference, 0.0);
    let e = with("1").unwrap_err().to_string();
    assert!(
        e.contains("g.yaml: `efficiency.overlap_interference`: expected a fraction from 0 up to (not including) 1, found 1"),
        "{e}"
    );
    for (name, _) in crate::spec::presets::DEVICES {
        let d = crate::spec::load_device(name).unwrap();
        assert_eq!(d.efficiency.overlap_interference, 0.16, "{name}");
    }
}

/// Times divide by efficiencies: 0 would price every kernel (or transfer) at infinity, so
/// an efficiency must be in [0.001, 1] (5e-324 had priced infinite steps), and the error
/// names the field. Rates nine orders of magnitude below their ceiling are refused too.
#[test]
fn zero_efficiency_is_an_error_naming_the_field() {
    for tiny in ["0", "5e-324"] {
        let e = DeviceSpec::from_yaml("g.yaml", &format!("{DEVICE}efficiency: {{gemm: {tiny}}}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("g.yaml: `efficiency.gemm`: expected an efficiency from 0.001 to 1"),
            "{e}"
        );
    }
    let e = DeviceSpec::from_yaml("g.yaml", &DEVICE.replace("2000", "5e-324"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`hbm_gbytes_s`: 5e-324 is implausibly small (at least 1e-4)"),
        "{e}"
    );
    let e = DeviceSpec::from_yaml("g.yaml", &format!("{DEVICE}efficiency: {{hbm: 1.5}}\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("`efficiency.hbm`"), "{e}");
    let d = DeviceSpec::from_yaml("g.yaml", &format!("{DEVICE}efficiency: {{gemm: 1}}\n")).unwrap();
    assert_eq!(d.efficiency.gemm, 1.0);
    let cluster = format!(
        "name: c\ngpu: {{{}}}\nnodes: 1\ngpus_per_node: 8\nintra_node: {{bw_gbytes_s: 300, efficiency: 0}}\n",
        "name: g, memory_gib: 80, hbm_gbytes_s: 2000, peak_tflops: {bf16: 300}"
    );
    let e = ClusterSpec::from_yaml("c.yaml", &cluster, &|_| unreachable!())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`intra_node.efficiency`: expected an efficiency"),
        "{e}"
    );
}

/// Every preset cluster (H100 with its FP8 peak, A100 without; one node and several)
/// written by `to_yaml` reads back equal, its device inline; the calibration key and the
/// absent network stay absent.
#[test]
fn to_yaml_round_trips_every_preset() {
    for (name, _) in crate::spec::presets::CLUSTERS {
        let c = crate::spec::load_cluster(name).unwrap();
        let text = c.to_yaml(&["from a test".into()]);
        assert!(text.starts_with("# from a test\n{"), "{text}");
        assert!(!text.contains("null"), "{text}");
        let back = ClusterSpec::from_yaml("c.yaml", &text, &|g| panic!("inline, not {g}"))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        assert_eq!(back, c, "{name}");
    }
}

/// A device no larger than the CUDA context is refused by the field that collides with it:
/// 0.4 GiB against the default 0.5 GiB context; 0.6 GiB passes, as does 0.4 GiB with a
/// 0.3 GiB context.
#[test]
fn device_memory_must_exceed_the_cuda_context() {
    let cluster = |mem: &str, ctx: &str| {
        let yaml = format!(
            "name: c\ngpu: {{name: g, memory_gib: {mem}, hbm_gbytes_s: 2000, peak_tflops: \
             {{bf16: 300}}}}\nnodes: 1\ngpus_per_node: 8\nintra_node: {{bw_gbytes_s: 300}}\n{ctx}"
        );
        let c = ClusterSpec::from_yaml("c.yaml", &yaml, &|_| unreachable!()).unwrap();
        check_cluster(&c, "c.yaml")
    };
    let p = cluster("0.4", "");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "cuda_context_gib");
    assert!(
        p[0].message
            .contains("0.5 GiB per GPU) takes all of the device's 0.4 GiB")
    );
    assert!(cluster("0.6", "").is_empty());
    assert!(cluster("0.4", "cuda_context_gib: 0.3\n").is_empty());
}

/// A device file read as a cluster is one problem saying so and how a cluster names it (it
/// had listed four missing cluster fields and six unknown device keys): a preset's own file
/// by the preset's name, with the cluster presets of that GPU; any other device file by its
/// path. A cluster that merely lacks its fields still gets them listed.
#[test]
fn a_device_file_given_as_a_cluster_says_so() {
    let read = |file: &str, text: &str| {
        ClusterSpec::from_yaml(file, text, &|g| panic!("no device is resolved, not {g}"))
            .unwrap_err()
            .problems()
            .to_vec()
    };
    let h100 = crate::spec::presets::find(crate::spec::presets::DEVICES, "h100-sxm5-80gb").unwrap();
    let p = read("hardware/gpus/h100-sxm5-80gb.yaml", h100);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].to_string(),
        "hardware/gpus/h100-sxm5-80gb.yaml: `(document)`: this is a GPU device file \
         (memory_gib, hbm_gbytes_s, peak_tflops), not a cluster: a cluster file names it as \
         `gpu: h100-sxm5-80gb` beside `name`, `nodes`, `gpus_per_node` and `intra_node` (fix: \
         pass a cluster preset with this GPU (h100x8, h100-x1024; `planner clusters` lists \
         them all), or a cluster file that names it)"
    );
    let p = read("my/g.yaml", DEVICE);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].message,
        "this is a GPU device file (memory_gib, hbm_gbytes_s, peak_tflops), not a cluster: a \
         cluster file names it as `gpu: my/g.yaml` beside `name`, `nodes`, `gpus_per_node` and \
         `intra_node`"
    );
    assert_eq!(
        p[0].fix,
        "pass a cluster preset (`planner clusters` lists them), or a cluster file that names \
         this device"
    );
    let fields: Vec<String> = read("c.yaml", "name: c\nnodes: 1\n")
        .into_iter()
        .map(|p| p.field)
        .collect();
    assert_eq!(fields, ["gpu", "gpus_per_node", "intra_node"]);
}
