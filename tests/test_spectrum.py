import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA

from simreduce.evaluate.bounds import pca_explained_variance
from simreduce.reducers.spectrum import cosine_spectrum, row_mean, spectrum


def anisotropic(n: int, d: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n * d)
    return torch.randn(n, d, generator=generator) * torch.linspace(3, 0.1, d) + 0.5


@pytest.mark.parametrize(("n", "d"), [(40, 12), (9, 12), (12, 12)])
def test_blocked_gram_and_thin_svd_agree_with_a_direct_svd(n, d):
    """More rows than columns goes through the Gram summed in blocks, the rest through a thin SVD; both are
    the float64 SVD of the normalised rows, axes signed the same way."""
    x = anisotropic(n, d)
    _, s, vh = torch.linalg.svd(F.normalize(x.double(), dim=1), full_matrices=False)
    found = cosine_spectrum(x, block_rows=5)
    np.testing.assert_allclose(found.singular_values, s, rtol=1e-9, atol=1e-9)
    aligned = vh * (found.axes * vh).sum(dim=1, keepdim=True).sign()
    np.testing.assert_allclose(found.axes, aligned, atol=1e-8)
    largest = found.axes.gather(1, found.axes.abs().argmax(dim=1, keepdim=True))
    assert (largest > 0).all()


def test_blocks_do_not_change_the_result():
    x = anisotropic(50, 6)
    one, many = spectrum(x, block_rows=1000), spectrum(x, block_rows=3)
    np.testing.assert_allclose(one.singular_values, many.singular_values, rtol=1e-12)
    np.testing.assert_allclose(one.axes, many.axes, atol=1e-10)


def test_centred_spectrum_is_scikit_learn_pca():
    x = anisotropic(60, 7)
    found = spectrum(x, shift=-row_mean(x, block_rows=8), block_rows=8)
    pca = PCA(5).fit(x.double().numpy())
    np.testing.assert_allclose(found.axes[:5], pca.components_, atol=1e-9)
    assert pca_explained_variance(x, 5) == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-9)
