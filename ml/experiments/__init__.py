"""One-off experiments kept so that the figures quoted from them can be reproduced; nothing imports them."""
