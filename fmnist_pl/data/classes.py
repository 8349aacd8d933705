"""The one place that knows FashionMNIST's classes and image shape."""

IMAGE_SHAPE: tuple[int, int, int] = (1, 28, 28)
INPUT_SIZE: int = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "en": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    # The tutorial's own names, in label order.
    "ko": ("티셔츠/윗옷", "바지", "스웨터", "드레스", "코트", "샌들", "셔츠", "운동화", "가방", "앵클부츠"),
}
NUM_CLASSES: int = len(CLASS_NAMES["en"])

# Mean and standard deviation of the 60,000 training images scaled to [0, 1].
FASHION_MNIST_MEAN: float = 0.2860
FASHION_MNIST_STD: float = 0.3530

TRAIN_SIZE: int = 60_000
