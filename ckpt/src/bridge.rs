//! Moving tensors between a dfdx module and a [`TensorMap`], keyed by the module's field paths
//! (our native names, which are the OpenAI/open_clip names except for the split q/k/v
//! projections and the flattened `conv1`).

use crate::error::{CkptError, Result};
use crate::tensors::{Array, TensorMap};
use dfdx::nn::tensor_collection::*;
use dfdx::prelude::*;
use gadms_nn::Float;
use std::collections::BTreeSet;

struct Extract {
    map: TensorMap,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for Extract {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> std::result::Result<Option<Tensor<S, E, D>>, Self::Err> {
        let data = t
            .as_vec()
            .into_iter()
            .map(|x| x.to_f32().unwrap())
            .collect();
        self.map
            .insert(name, Array::new(t.shape().concrete().into(), data));
        Ok(None)
    }
}

/// Every tensor of `module` under its native name, as f32.
pub fn module_to_map<E: Float, D: Device<E>, M: TensorCollection<E, D>>(module: &M) -> TensorMap {
    let mut ex = Extract {
        map: TensorMap::default(),
    };
    let walked = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut ex,
    });
    if walked.is_err() {
        unreachable!("reading host copies of tensors cannot fail");
    }
    ex.map
}

struct Shapes(Vec<(String, Vec<usize>)>);

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for Shapes {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> std::result::Result<Option<Tensor<S, E, D>>, Self::Err> {
        self.0.push((name, t.shape().concrete().into()));
        Ok(None)
    }
}

/// The native key set of a module, sorted by key, with shapes (no data copied).
pub fn module_shapes<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Shapes(Vec::new());
    let walked = M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut shapes,
    });
    if walked.is_err() {
        unreachable!("listing tensor shapes cannot fail");
    }
    shapes.0.sort();
    shapes.0
}

struct Inject<'a> {
    map: &'a TensorMap,
    used: BTreeSet<String>,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for Inject<'_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = CkptError;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&mut Tensor<S, E, D>, String),
    ) -> std::result::Result<Option<Tensor<S, E, D>>, Self::Err> {
        let expected: Vec<usize> = t.shape().concrete().into();
        let Some(a) = self.map.get(&name) else {
            return Err(CkptError::Missing {
                path: self.map.origin.clone(),
                key: name,
                expected,
                hint: "the file is incomplete or for another architecture".into(),
            });
        };
        if a.shape != expected {
            return Err(CkptError::Shape {
                path: self.map.origin.clone(),
                key: name,
                found: a.shape.clone(),
                expected,
                hint: String::new(),
            });
        }
        let data: Vec<E> = a.data.iter().map(|&x| E::from_f32(x).unwrap()).collect();
        t.copy_from(&data);
        self.used.insert(name);
        Ok(None)
    }
}

/// Copies `map` into `module`: every module tensor must be present with the same shape and
/// no key may be left over (strict, like PyTorch `load_state_dict(strict=True)`).
/// On error the module may be partly overwritten; callers load into a fresh model.
pub fn map_to_module<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    map: &TensorMap,
    module: &mut M,
) -> Result<()> {
    let mut inj = Inject {
        map,
        used: BTreeSet::new(),
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut inj,
    })?;
    let extra: Vec<String> = map
        .tensors
        .keys()
        .filter(|k| !inj.used.contains(*k))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(CkptError::Unexpected {
            path: map.origin.clone(),
            keys: extra,
        });
    }
    Ok(())
}

struct ExtractGrads<'a, E: Dtype, D: Storage<E>> {
    grads: &'a Gradients<E, D>,
    map: TensorMap,
}

impl<E: Float, D: Device<E>> TensorVisitor<E, D> for ExtractGrads<'_, E, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = D::Err;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> std::result::Result<Option<Tensor<S, E, D>>, Self::Err> {
        let g = self.grads.get(t);
        let data = g
            .as_vec()
            .into_iter()
            .map(|x| x.to_f32().unwrap())
            .collect();
        self.map
            .insert(name, Array::new(t.shape().concrete().into(), data));
        Ok(None)
    }
}

/// The gradient of every tensor of `module` under its native name (from a leaky or
/// `alloc_grads` gradient store that holds all of them).
pub fn grads_to_map<E: Float, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &Gradients<E, D>,
) -> TensorMap {
    let mut ex = ExtractGrads {
        grads,
        map: TensorMap::default(),
    };
    if M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut ex,
    })
    .is_err()
    {
        unreachable!("reading host copies of gradients cannot fail");
    }
    ex.map
}
