"""bench/products.py: the products of one sampling call, counted by hand."""

from bench.products import Product, call_products, floor_ms
from models.gpt import GPTConfig


def test_a_call_of_two_layers_has_the_products_counted_by_hand():
    # d=8, 2 layers, 16 actions; 3 prompts of 10 real tokens in all, 2 samples each, 4 actions a row.
    products = call_products(GPTConfig(vocab_size=16, n_layer=2, d_model=8), 10, 3, 2, 4)
    assert products == [
        # prefill, the layer below the last at every real token: qkv, output, feed-forward up and down
        Product(10, 8, 24, 1), Product(10, 8, 8, 1), Product(10, 8, 32, 1), Product(10, 32, 8, 1),
        # the last layer: keys and values at every real token, the rest at each prompt's last token
        Product(10, 8, 24, 1), Product(3, 8, 8, 1), Product(3, 8, 32, 1), Product(3, 32, 8, 1),
        # 3 decoding steps (none after the 4th action) of 2 layers over 6 rows
        Product(6, 8, 24, 6), Product(6, 8, 8, 6), Product(6, 8, 32, 6), Product(6, 32, 8, 6),
        Product(6, 8, 16, 4),  # logits before each of the 4 actions
    ]  # fmt: skip
    # 2*10*8*(24+8+32+32) + 2*10*8*24 + 2*3*8*(8+32+32) + 6*2*6*8*(24+8+32+32) + 2*4*6*8*16
    assert sum(p.flops for p in products) == 15_360 + 3_840 + 3_456 + 55_296 + 6_144


def test_the_floor_is_the_products_time_and_grows_with_their_count():
    one, many = [Product(64, 128, 128, 1)], [Product(64, 128, 128, 100)]
    assert 0 < floor_ms(one) < floor_ms(many)
