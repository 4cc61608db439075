"""The fixed world the synthetic marketplace lives in: taxonomy, brands, words, cities, daily rhythm.

It is data, not randomness, so that a category or brand name means the same thing in every run and the
planted structure (complements, brand-category ties, price levels) is readable by a person checking a
recommendation by eye.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Category:
    """A level-2 category: the unit of user preference and session intent."""

    l1: str
    l2: str
    #: (level-3 name as shown in the path, singular noun used in titles)
    l3: tuple[tuple[str, str], ...]
    #: ordered by popularity inside the category (the first is the most listed)
    brands: tuple[str, ...]
    #: words that make titles of this category recognisable to a text model
    features: tuple[str, ...]
    #: typical asking price of a new item, in the marketplace's currency
    mean_price: float
    #: the level-2 category people often look at next (phone -> case)
    complement: str


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Electronics",
        "Phones",
        (("Smartphones", "Smartphone"), ("Feature Phones", "Phone"), ("Foldables", "Foldable Phone")),
        ("Apple", "Samsung", "Google", "Xiaomi", "OnePlus", "Motorola", "Nokia", "Sony"),
        ("128GB", "256GB", "5G", "Dual SIM", "Unlocked", "OLED"),
        450.0,
        "Phone Accessories",
    ),
    Category(
        "Electronics",
        "Phone Accessories",
        (
            ("Cases", "Case"),
            ("Chargers", "Charger"),
            ("Screen Protectors", "Screen Protector"),
            ("Earbuds", "Earbuds"),
        ),
        ("Anker", "Belkin", "Spigen", "OtterBox", "JBL", "Samsung", "Apple", "Ugreen"),
        ("USB-C", "MagSafe", "Wireless", "Fast Charge", "Shockproof", "Slim"),
        25.0,
        "Phones",
    ),
    Category(
        "Electronics",
        "Laptops",
        (("Ultrabooks", "Ultrabook"), ("Gaming Laptops", "Gaming Laptop"), ("Chromebooks", "Chromebook")),
        ("Apple", "Lenovo", "Dell", "HP", "Asus", "Acer", "MSI", "Microsoft"),
        ("16GB RAM", "512GB SSD", "14-inch", "RTX 4060", "M3", "Touchscreen"),
        900.0,
        "Computer Accessories",
    ),
    Category(
        "Electronics",
        "Computer Accessories",
        (("Keyboards", "Keyboard"), ("Mice", "Mouse"), ("Monitors", "Monitor"), ("Docking Stations", "Dock")),
        ("Logitech", "Razer", "Dell", "LG", "Corsair", "Anker", "HP", "Microsoft"),
        ("Mechanical", "Wireless", "27-inch", "4K", "Ergonomic", "Bluetooth"),
        80.0,
        "Laptops",
    ),
    Category(
        "Fashion",
        "Women's Clothing",
        (("Dresses", "Dress"), ("Tops", "Top"), ("Jeans", "Jeans"), ("Coats", "Coat")),
        ("Zara", "H&M", "Mango", "Levi's", "Uniqlo", "Only", "Vero Moda", "COS"),
        ("Size S", "Size M", "Cotton", "Linen", "Wool", "Oversized"),
        40.0,
        "Women's Shoes",
    ),
    Category(
        "Fashion",
        "Men's Clothing",
        (("Shirts", "Shirt"), ("Jeans", "Jeans"), ("Jackets", "Jacket"), ("Suits", "Suit")),
        (
            "Levi's",
            "Uniqlo",
            "Hugo Boss",
            "Tommy Hilfiger",
            "Ralph Lauren",
            "H&M",
            "Jack & Jones",
            "Carhartt",
        ),
        ("Size M", "Size L", "Slim Fit", "Cotton", "Wool", "Denim"),
        45.0,
        "Men's Shoes",
    ),
    Category(
        "Fashion",
        "Women's Shoes",
        (("Sneakers", "Sneakers"), ("Boots", "Boots"), ("Heels", "Heels"), ("Sandals", "Sandals")),
        ("Nike", "Adidas", "Dr. Martens", "Converse", "Steve Madden", "Birkenstock", "Vans", "Geox"),
        ("Size 38", "Size 39", "Leather", "Suede", "Waterproof", "Platform"),
        70.0,
        "Women's Clothing",
    ),
    Category(
        "Fashion",
        "Men's Shoes",
        (
            ("Sneakers", "Sneakers"),
            ("Boots", "Boots"),
            ("Loafers", "Loafers"),
            ("Running Shoes", "Running Shoes"),
        ),
        ("Nike", "Adidas", "New Balance", "Timberland", "Clarks", "Puma", "Asics", "Vans"),
        ("Size 43", "Size 44", "Leather", "Gore-Tex", "Lightweight", "Retro"),
        80.0,
        "Men's Clothing",
    ),
    Category(
        "Home & Garden",
        "Furniture",
        (("Sofas", "Sofa"), ("Tables", "Table"), ("Chairs", "Chair"), ("Wardrobes", "Wardrobe")),
        ("IKEA", "West Elm", "Muuto", "Hay", "Vitra", "Habitat", "Made", "Kartell"),
        ("Oak", "Velvet", "3-Seater", "Extendable", "Solid Wood", "Mid-Century"),
        250.0,
        "Home Decor",
    ),
    Category(
        "Home & Garden",
        "Home Decor",
        (("Lamps", "Lamp"), ("Rugs", "Rug"), ("Mirrors", "Mirror"), ("Vases", "Vase")),
        ("IKEA", "H&M Home", "Zara Home", "Hay", "Ferm Living", "Habitat", "Menu", "Louis Poulsen"),
        ("Brass", "Ceramic", "Handmade", "Wool", "Round", "Vintage"),
        45.0,
        "Furniture",
    ),
    Category(
        "Home & Garden",
        "Kitchen",
        (
            ("Cookware", "Pan"),
            ("Coffee Machines", "Coffee Machine"),
            ("Knives", "Knife"),
            ("Blenders", "Blender"),
        ),
        ("Le Creuset", "De'Longhi", "Nespresso", "KitchenAid", "Tefal", "WMF", "Zwilling", "Smeg"),
        ("Cast Iron", "Stainless Steel", "Non-Stick", "Espresso", "1.5L", "Induction"),
        90.0,
        "Home Decor",
    ),
    Category(
        "Home & Garden",
        "Garden",
        (
            ("Lawn Mowers", "Lawn Mower"),
            ("Garden Tools", "Garden Tool"),
            ("Planters", "Planter"),
            ("BBQs", "BBQ"),
        ),
        ("Bosch", "Gardena", "Husqvarna", "Makita", "Fiskars", "Stihl", "Weber", "Keter"),
        ("Cordless", "Electric", "Petrol", "Galvanised", "Charcoal", "Gas"),
        120.0,
        "Kitchen",
    ),
    Category(
        "Sports & Outdoors",
        "Bicycles",
        (
            ("Road Bikes", "Road Bike"),
            ("Mountain Bikes", "Mountain Bike"),
            ("City Bikes", "City Bike"),
            ("E-Bikes", "E-Bike"),
        ),
        ("Trek", "Specialized", "Giant", "Cannondale", "Cube", "Scott", "Brompton", "Canyon"),
        ("Carbon", "Aluminium", "Frame M", "Frame L", "Shimano 105", "Hydraulic Brakes"),
        700.0,
        "Cycling Gear",
    ),
    Category(
        "Sports & Outdoors",
        "Cycling Gear",
        (("Helmets", "Helmet"), ("Bike Lights", "Bike Light"), ("Locks", "Lock"), ("Jerseys", "Jersey")),
        ("Giro", "Abus", "Shimano", "Rapha", "Castelli", "Lezyne", "Kryptonite", "Bell"),
        ("MIPS", "USB Rechargeable", "D-Lock", "Size M", "Reflective", "Aero"),
        40.0,
        "Bicycles",
    ),
    Category(
        "Sports & Outdoors",
        "Fitness",
        (
            ("Dumbbells", "Dumbbell Set"),
            ("Yoga Mats", "Yoga Mat"),
            ("Treadmills", "Treadmill"),
            ("Kettlebells", "Kettlebell"),
        ),
        ("Decathlon", "Reebok", "Bowflex", "Technogym", "Manduka", "Domyos", "Kettler", "NordicTrack"),
        ("Adjustable", "20kg", "Non-Slip", "Foldable", "Cast Iron", "6mm"),
        90.0,
        "Camping & Hiking",
    ),
    Category(
        "Sports & Outdoors",
        "Camping & Hiking",
        (
            ("Tents", "Tent"),
            ("Backpacks", "Backpack"),
            ("Sleeping Bags", "Sleeping Bag"),
            ("Hiking Boots", "Hiking Boots"),
        ),
        ("The North Face", "Patagonia", "Salomon", "Osprey", "Vaude", "Jack Wolfskin", "Deuter", "Columbia"),
        ("2-Person", "40L", "Waterproof", "Ultralight", "3-Season", "Gore-Tex"),
        110.0,
        "Fitness",
    ),
    Category(
        "Toys & Games",
        "Building Toys",
        (("Lego Sets", "Lego Set"), ("Construction Kits", "Construction Kit"), ("Marble Runs", "Marble Run")),
        ("LEGO", "Playmobil", "Mega Bloks", "K'Nex", "Magformers", "Meccano", "Brio", "Geomag"),
        ("Technic", "City", "Star Wars", "1000 Pieces", "Ages 6+", "Magnetic"),
        45.0,
        "Board Games",
    ),
    Category(
        "Toys & Games",
        "Board Games",
        (
            ("Strategy Games", "Strategy Game"),
            ("Party Games", "Party Game"),
            ("Puzzles", "Puzzle"),
            ("Card Games", "Card Game"),
        ),
        ("Hasbro", "Ravensburger", "Asmodee", "Kosmos", "Mattel", "Days of Wonder", "Z-Man", "Haba"),
        ("2-4 Players", "Family", "1000 Pieces", "Expansion", "Cooperative", "Ages 8+"),
        30.0,
        "Building Toys",
    ),
    Category(
        "Toys & Games",
        "Video Games",
        (
            ("PlayStation Games", "PS5 Game"),
            ("Xbox Games", "Xbox Game"),
            ("Nintendo Games", "Switch Game"),
            ("PC Games", "PC Game"),
        ),
        ("Nintendo", "Sony", "Microsoft", "Ubisoft", "EA", "Activision", "Capcom", "Square Enix"),
        ("Sealed", "Collector's Edition", "RPG", "Racing", "Shooter", "Multiplayer"),
        40.0,
        "Consoles",
    ),
    Category(
        "Toys & Games",
        "Consoles",
        (
            ("Home Consoles", "Console"),
            ("Handheld Consoles", "Handheld Console"),
            ("Controllers", "Controller"),
            ("VR Headsets", "VR Headset"),
        ),
        ("Sony", "Microsoft", "Nintendo", "Valve", "Meta", "8BitDo", "Razer", "Logitech"),
        ("1TB", "Digital Edition", "OLED", "Wireless", "Bundle", "Boxed"),
        300.0,
        "Video Games",
    ),
    Category(
        "Baby & Kids",
        "Strollers",
        (
            ("Pushchairs", "Pushchair"),
            ("Travel Systems", "Travel System"),
            ("Buggies", "Buggy"),
            ("Prams", "Pram"),
        ),
        ("Bugaboo", "Cybex", "Joolz", "Maxi-Cosi", "Stokke", "Babyzen", "Thule", "Britax"),
        ("Foldable", "All-Terrain", "Lightweight", "Reversible Seat", "Rain Cover", "Newborn"),
        350.0,
        "Car Seats",
    ),
    Category(
        "Baby & Kids",
        "Car Seats",
        (
            ("Infant Seats", "Infant Seat"),
            ("Convertible Seats", "Convertible Seat"),
            ("Booster Seats", "Booster Seat"),
            ("Isofix Bases", "Isofix Base"),
        ),
        ("Maxi-Cosi", "Cybex", "Britax", "Joie", "Recaro", "Römer", "BeSafe", "Chicco"),
        ("Isofix", "i-Size", "Rear-Facing", "Group 0+", "Group 1", "Swivel"),
        180.0,
        "Strollers",
    ),
    Category(
        "Baby & Kids",
        "Kids' Clothing",
        (
            ("Bodysuits", "Bodysuit"),
            ("Kids' Jackets", "Kids' Jacket"),
            ("Kids' Shoes", "Kids' Shoes"),
            ("Pyjamas", "Pyjamas"),
        ),
        ("Petit Bateau", "H&M", "Zara Kids", "Name It", "Mini Rodini", "Joha", "Hust & Claire", "Next"),
        ("Size 86", "Size 104", "Organic Cotton", "Merino", "Set of 3", "Waterproof"),
        20.0,
        "Nursery",
    ),
    Category(
        "Baby & Kids",
        "Nursery",
        (
            ("Cots", "Cot"),
            ("Changing Tables", "Changing Table"),
            ("Baby Monitors", "Baby Monitor"),
            ("High Chairs", "High Chair"),
        ),
        ("Stokke", "IKEA", "Leander", "Philips Avent", "Nanit", "Chicco", "Joie", "Cybex"),
        ("Convertible", "Beech", "Video", "Adjustable", "White", "Wi-Fi"),
        150.0,
        "Kids' Clothing",
    ),
)

ADJECTIVES: tuple[str, ...] = (
    "Classic",
    "Compact",
    "Premium",
    "Modern",
    "Lightweight",
    "Sturdy",
    "Elegant",
    "Portable",
    "Essential",
    "Vintage",
    "Sleek",
    "Durable",
)

COLORS: tuple[str, ...] = (
    "Black",
    "White",
    "Silver",
    "Blue",
    "Red",
    "Green",
    "Grey",
    "Beige",
    "Navy",
    "Pink",
)

#: condition code -> (canonical value, how a seller phrases it, price multiplier against new)
CONDITIONS: tuple[tuple[str, str, float], ...] = (
    ("new", "brand new, never used", 1.0),
    ("like_new", "like new, barely used", 0.85),
    ("good", "in good condition with light signs of use", 0.68),
    ("fair", "in fair condition, visible wear, fully working", 0.5),
)
CONDITION_WEIGHTS: tuple[float, ...] = (0.36, 0.24, 0.28, 0.12)

#: Ordered by size: listing and user locations are drawn with Zipf-like weights over this order.
CITIES: tuple[str, ...] = (
    "London",
    "Berlin",
    "Madrid",
    "Paris",
    "Rome",
    "Warsaw",
    "Hamburg",
    "Vienna",
    "Barcelona",
    "Munich",
    "Milan",
    "Prague",
    "Amsterdam",
    "Budapest",
    "Stockholm",
    "Brussels",
    "Lisbon",
    "Copenhagen",
    "Dublin",
    "Lyon",
    "Cologne",
    "Krakow",
    "Frankfurt",
    "Athens",
    "Helsinki",
    "Oslo",
    "Zurich",
    "Porto",
    "Valencia",
    "Rotterdam",
    "Antwerp",
    "Marseille",
    "Seville",
    "Naples",
    "Turin",
    "Gothenburg",
    "Edinburgh",
    "Manchester",
    "Bucharest",
    "Sofia",
)

DEVICE_TYPES: tuple[str, ...] = ("mobile", "desktop", "tablet")
DEVICE_WEIGHTS: tuple[float, ...] = (0.6, 0.3, 0.1)

#: Relative traffic per UTC hour: quiet nights, a lunch bump, an evening peak.
HOUR_PROFILE: tuple[float, ...] = (
    0.25, 0.14, 0.09, 0.07, 0.07, 0.11, 0.25, 0.5, 0.78, 0.9, 0.98, 1.05,
    1.15, 1.1, 1.0, 0.98, 1.02, 1.12, 1.3, 1.5, 1.62, 1.5, 1.1, 0.55,
)  # fmt: skip

#: Relative traffic per weekday, Monday first: marketplaces are busier at the weekend.
WEEKDAY_PROFILE: tuple[float, ...] = (1.0, 0.96, 0.97, 1.0, 1.06, 1.22, 1.28)
