//! The `gc`, `sys` and `heap` modules of the script language.

use std::sync::Arc;

use crate::heap::Handle;

use super::builtins::Args;
use super::error::*;
use super::interp::{Code, Interpreter, MAX_RECURSION_LIMIT};

impl Interpreter {
    // ----- modules -----

    /// `module.name` (not called).
    pub(crate) fn module_attr(&mut self, module: &str, name: &str) -> R<Handle> {
        match (module, name) {
            ("sys", "argv") => return Ok(self.argv.clone()),
            ("sys", "maxsize") => return Ok(self.int(i64::MAX)),
            _ => {}
        }
        if module_fn_exists(module, name) {
            let code = Code::ModuleFn(module.to_string(), name.to_string());
            return Ok(self.heap.function(name, Arc::new(code), &[]));
        }
        Err(exc(
            ErrorKind::AttributeError,
            format!("module '{module}' has no attribute '{name}'"),
        ))
    }

    /// `module.name(args)`.
    pub(crate) fn call_module_fn(
        &mut self,
        module: &str,
        name: &str,
        args: Vec<Handle>,
        kwargs: Vec<(String, Handle)>,
    ) -> R<Handle> {
        if !module_fn_exists(module, name) {
            // `sys.argv(...)` and the like: not callable, or not there.
            let v = self.module_attr(module, name)?;
            return self.call_value(&v, args, kwargs);
        }
        let mut a = Args::new(&format!("{module}.{name}"), args, kwargs);
        let heap = self.heap.clone();
        match (module, name) {
            ("gc", "collect") => {
                let g = a.kw("generation");
                a.check(0, 1)?;
                let g = match a.pos.first().cloned().or(g) {
                    Some(g) => self.int_arg("collect", &g)?,
                    None => 2,
                };
                if !(0..=2).contains(&g) {
                    return Err(value_err("invalid generation"));
                }
                let n = self.lib(heap.collect(g as usize))?;
                Ok(self.u64_handle(n))
            }
            ("gc", "get_stats") => {
                a.check(0, 0)?;
                let stats = heap.get_stats();
                let mut out = Vec::new();
                for s in &stats {
                    let c = self.u64_handle(s.collections);
                    let d = self.u64_handle(s.collected);
                    let u = self.u64_handle(s.uncollectable);
                    out.push(heap.dict(&[
                        ("collections", &c),
                        ("collected", &d),
                        ("uncollectable", &u),
                    ]));
                }
                Ok(self.list_of(&out))
            }
            ("gc", "get_count") | ("gc", "get_threshold") => {
                a.check(0, 0)?;
                let v = if name == "get_count" {
                    heap.get_count()
                } else {
                    heap.get_threshold()
                };
                let items: Vec<Handle> = v.iter().map(|&x| self.u64_handle(x)).collect();
                Ok(self.tuple_of(&items))
            }
            ("gc", "set_threshold") => {
                a.check(1, 3)?;
                let mut t = heap.get_threshold();
                for (i, h) in a.pos.iter().enumerate() {
                    let v = self.int_arg("set_threshold", h)?;
                    t[i] = u64::try_from(v)
                        .map_err(|_| value_err("gc.set_threshold() thresholds must be >= 0"))?;
                }
                heap.set_threshold(t);
                Ok(self.none.clone())
            }
            ("gc", "enable" | "disable" | "freeze" | "unfreeze") => {
                a.check(0, 0)?;
                match name {
                    "enable" => heap.enable(),
                    "disable" => heap.disable(),
                    "freeze" => heap.freeze(),
                    _ => heap.unfreeze(),
                }
                Ok(self.none.clone())
            }
            ("gc", "isenabled") => {
                a.check(0, 0)?;
                Ok(self.bool(heap.is_enabled()))
            }
            ("gc", "get_freeze_count") => {
                a.check(0, 0)?;
                Ok(self.u64_handle(heap.get_freeze_count() as u64))
            }
            ("gc", "is_tracked") => {
                a.check(1, 1)?;
                Ok(self.bool(a.pos[0].is_tracked()))
            }
            ("gc", "get_referrers" | "get_referents") => {
                a.check(0, usize::MAX)?;
                let mut out = Vec::new();
                for h in &a.pos {
                    if name == "get_referrers" {
                        out.extend(heap.get_referrers(h));
                    } else {
                        out.extend(heap.get_referents(h));
                    }
                }
                Ok(self.list_of(&out))
            }
            ("sys", "getrefcount") => {
                a.check(1, 1)?;
                // The count includes the argument's own reference, as in CPython.
                Ok(self.u64_handle(a.pos[0].refcount() as u64))
            }
            ("sys", "getrecursionlimit") => {
                a.check(0, 0)?;
                Ok(self.int(self.recursion_limit as i64))
            }
            ("sys", "setrecursionlimit") => {
                a.check(1, 1)?;
                let n = self.int_arg("setrecursionlimit", &a.pos[0])?;
                if n < 1 {
                    return Err(value_err("recursion limit must be greater or equal than 1"));
                }
                if n as u64 > MAX_RECURSION_LIMIT as u64 {
                    return Err(value_err(format!(
                        "recursion limit {n} is above the interpreter's maximum of {MAX_RECURSION_LIMIT}"
                    )));
                }
                self.recursion_limit = n as usize;
                Ok(self.none.clone())
            }
            ("heap", "stats") => {
                a.check(0, 0)?;
                self.heap_stats()
            }
            ("heap", "why_alive") => {
                a.check(1, 1)?;
                let lines: Vec<Handle> = heap
                    .why_alive(&a.pos[0])
                    .iter()
                    .map(|l| heap.str(l))
                    .collect();
                Ok(self.list_of(&lines))
            }
            _ => unreachable!("module_fn_exists checked"),
        }
    }

    pub(crate) fn heap_stats(&mut self) -> R<Handle> {
        let heap = self.heap.clone();
        let s = heap.stats();
        let by_kind = heap.dict(&[]);
        for (k, n) in &s.by_kind {
            self.lib(heap.dict_set(&by_kind, k.name(), &self.u64_handle(*n as u64)))?;
        }
        let holders = heap.dict(&[]);
        for (k, n) in &s.budget_holders {
            self.lib(heap.dict_set(&holders, k, &self.u64_handle(*n)))?;
        }
        let mut gens = Vec::new();
        for g in &s.gc {
            let c = self.u64_handle(g.collections);
            let d = self.u64_handle(g.collected);
            let u = self.u64_handle(g.uncollectable);
            let b = self.u64_handle(g.bytes_freed);
            let p = heap.float(g.pause.as_secs_f64());
            let m = heap.float(g.max_pause.as_secs_f64());
            gens.push(heap.dict(&[
                ("collections", &c),
                ("collected", &d),
                ("uncollectable", &u),
                ("bytes_freed", &b),
                ("pause_seconds", &p),
                ("max_pause_seconds", &m),
            ]));
        }
        let gc = self.list_of(&gens);
        let figures: [(&str, u64); 12] = [
            ("objects", s.objects as u64),
            ("tracked", s.tracked as u64),
            ("frozen", s.frozen as u64),
            ("chunks", s.chunks as u64),
            ("bytes", s.chunk_bytes_resident),
            ("spilled", s.chunk_bytes_spilled),
            ("chunks_evicted", s.chunks_evicted as u64),
            ("chunks_pinned", s.chunks_pinned as u64),
            ("spill_files", s.spill_files as u64),
            ("budget_limit", s.budget_limit),
            ("budget_used", s.budget_used),
            ("budget_peak", s.budget_peak),
        ];
        let d = heap.dict(&[]);
        for (k, v) in figures {
            self.lib(heap.dict_set(&d, k, &self.u64_handle(v)))?;
        }
        self.lib(heap.dict_set(&d, "by_kind", &by_kind))?;
        self.lib(heap.dict_set(&d, "budget_holders", &holders))?;
        self.lib(heap.dict_set(&d, "gc", &gc))?;
        Ok(d)
    }
}

fn module_fn_exists(module: &str, name: &str) -> bool {
    let names: &[&str] = match module {
        "gc" => &[
            "collect",
            "get_stats",
            "get_count",
            "set_threshold",
            "get_threshold",
            "enable",
            "disable",
            "isenabled",
            "get_referrers",
            "get_referents",
            "is_tracked",
            "freeze",
            "unfreeze",
            "get_freeze_count",
        ],
        "sys" => &["getrefcount", "getrecursionlimit", "setrecursionlimit"],
        "heap" => &["stats", "why_alive"],
        _ => &[],
    };
    names.contains(&name)
}
